"""The API fuzz CI leg: schemathesis against a real Passgate, from its own /openapi.json.

    python -m tests.fuzz.run_schemathesis [--max-examples N] [extra schemathesis options]

Starts the service on 127.0.0.1 with a temporary SQLite database, then runs `schemathesis run`
as an administrator (tests/fuzz/hooks.py) with checks that every answer is documented, has the
documented body, and is never a server error. Prints the number of cases and the time taken;
exits non-zero when any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.live_server import running_service

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "ignored_auth",
    "use_after_free",
    "ensure_resource_availability",
    "negative_data_rejection",
    "missing_required_header",
]
FUZZ_EMAIL = "fuzz-admin@example.com"
FUZZ_PASSWORD = "fuzzing-admin-password-1"
# Generous limits, so the fuzzer explores the routes instead of mostly meeting 429s.
SETTINGS = {
    "LOGIN_RATE_LIMIT": "100000/minute",
    "SIGNUP_RATE_LIMIT": "100000/minute",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=60, help="cases per operation")
    parser.add_argument("--seed", type=int, default=None, help="repeat a run's random choices")
    options, extra = parser.parse_known_args()

    with tempfile.TemporaryDirectory(prefix="passgate-fuzz-") as temporary:
        data_dir = Path(temporary)
        with running_service(data_dir, **SETTINGS) as base_url:
            report = data_dir / "report.ndjson"
            command = [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{base_url}/openapi.json",
                "--checks",
                ",".join(CHECKS),
                "--max-examples",
                str(options.max_examples),
                "--workers",
                "2",
                "--report",
                "ndjson",
                "--report-ndjson-path",
                str(report),
                *(["--seed", str(options.seed)] if options.seed is not None else []),
                *extra,
            ]
            environment = {
                **os.environ,
                "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",
                "PASSGATE_FUZZ_URL": base_url,
                "PASSGATE_FUZZ_DATABASE": str(data_dir / "passgate.db"),
                "PASSGATE_FUZZ_EMAIL": FUZZ_EMAIL,
                "PASSGATE_FUZZ_PASSWORD": FUZZ_PASSWORD,
            }
            started = time.monotonic()
            result = subprocess.run(command, env=environment, check=False)  # noqa: S603
            elapsed = time.monotonic() - started
            print(f"schemathesis: {count_cases(report)} cases in {elapsed:.0f}s, "
                  f"exit code {result.returncode}")
    return result.returncode


def count_cases(report: Path) -> str:
    """Test cases run, from the NDJSON event stream (one JSON event per line)."""
    if not report.exists():
        return "unknown"
    cases = 0
    for line in report.read_text().splitlines():
        event = json.loads(line)
        cases += len(event.get("ScenarioFinished", {}).get("recorder", {}).get("cases", {}))
    return str(cases)


if __name__ == "__main__":
    sys.exit(main())
