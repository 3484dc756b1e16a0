"""compose.yaml hands the replicas every setting an operator must be able to choose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).parent.parent / "compose.yaml"

# API.md's configuration rows for mail, links and recovery (issue 12).
MAIL_SETTINGS = {
    "PUBLIC_URL",
    "PRODUCT_NAME",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "SMTP_TLS",
    "MAIL_FROM",
    "MAIL_OUTBOX_DIR",
    "REQUIRE_EMAIL_VERIFICATION",
    "PASSWORD_RESET_TTL_SECONDS",
    "EMAIL_VERIFICATION_TTL_SECONDS",
    "PASSWORD_RESET_URL",
    "EMAIL_VERIFICATION_URL",
    "RECOVERY_RATE_LIMIT",
}


def replica_environment() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    environments = [
        service["environment"]
        for name, service in document["services"].items()
        if name.startswith("passgate-")
    ]
    assert len(environments) == 2
    assert environments[0] == environments[1], "the replicas must be configured alike"
    return environments[0]


def test_compose_passes_every_mail_setting_to_the_replicas():
    assert replica_environment().keys() >= MAIL_SETTINGS
