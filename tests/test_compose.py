"""compose.yaml hands the replicas every setting an operator must be able to choose."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from app.config import Settings

COMPOSE = Path(__file__).parent.parent / "compose.yaml"

# Read by the image's entrypoint (or asyncpg), not by Settings.
NOT_SETTINGS = {
    "WORKERS",
    "FORWARDED_ALLOW_IPS",
    "PGPASSWORD_FILE",
    "SECRET_KEY_FILE",
    "SMTP_PASSWORD_FILE",
}

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


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_passes_the_metrics_token_and_introspection_clients_to_the_replicas():
    assert replica_environment().keys() >= {"METRICS_TOKEN", "INTROSPECTION_CLIENTS"}


def test_prometheus_scrapes_both_replicas_on_the_internal_network_only():
    document = compose()
    prometheus = document["services"]["prometheus"]
    assert prometheus["networks"] == ["backend"]
    assert document["networks"]["backend"]["internal"] is True
    assert "ports" not in prometheus
    config = yaml.safe_load(document["configs"]["prometheus"]["content"])
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"
    assert job["static_configs"] == [{"targets": ["passgate-1:8000", "passgate-2:8000"]}]
    mounted = {item["target"] for item in prometheus["configs"]}
    assert set(config["rule_files"]) <= mounted


def test_the_public_proxy_never_routes_metrics():
    caddyfile = compose()["configs"]["caddyfile"]["content"]
    refusal = caddyfile.index("respond @metrics 404")
    assert "@metrics path /metrics /metrics/*" in caddyfile
    # Caddy orders `respond` before `reverse_proxy` whatever the file says; placed first anyway.
    assert refusal < caddyfile.index("reverse_proxy")


def test_the_example_alerts_watch_login_failures_and_the_mail_backlog_with_real_series():
    from prometheus_client.metrics import MetricWrapperBase

    from app import metrics

    rules = yaml.safe_load(compose()["configs"]["passgate_alerts"]["content"])
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert "passgate_login_attempts_total" in alerts["PassgateLoginFailureSpike"]["expr"]
    assert "passgate_email_outbox_pending" in alerts["PassgateMailBacklogGrowing"]["expr"]
    exported = {
        name
        for collector in vars(metrics).values()
        if isinstance(collector, MetricWrapperBase)
        for family in collector.describe()
        for name in (family.name, f"{family.name}_total")
    }
    for rule in alerts.values():
        for series in re.findall(r"passgate_[a-z_]+", rule["expr"]):
            assert series in exported, (rule["alert"], series)
        assert rule["for"] and rule["labels"]["severity"]


def test_every_variable_compose_sets_is_one_the_service_reads():
    # A misspelt name would be ignored silently (Settings ignores unknown variables).
    fields = {name.upper() for name in Settings.model_fields}
    unknown = set(replica_environment()) - fields - NOT_SETTINGS
    assert unknown == set()
