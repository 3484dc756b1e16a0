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
from collections import Counter, defaultdict
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
REPOSITORY = Path(__file__).resolve().parents[2]
FUZZ_EMAIL = "fuzz-admin@example.com"
FUZZ_PASSWORD = "fuzzing-admin-password-1"
# Generous limits, so the fuzzer explores the routes instead of mostly meeting 429s.
SETTINGS = {
    "LOGIN_RATE_LIMIT": "100000/minute",
    "SIGNUP_RATE_LIMIT": "100000/minute",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=200, help="cases per operation")
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
                # One worker: with two, Hypothesis sometimes trips over CPython 3.11's ast module,
                # which is not thread-safe ("AST constructor recursion depth mismatch").
                "--workers",
                "1",
                "--report",
                "ndjson",
                "--report-ndjson-path",
                str(report),
                *(["--seed", str(options.seed)] if options.seed is not None else []),
                *extra,
            ]
            environment = {
                **os.environ,
                # Run from the temporary folder, so schemathesis and Hypothesis keep their caches
                # there instead of in the checkout; the hooks are found through PYTHONPATH.
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])
                ),
                "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",
                "PASSGATE_FUZZ_URL": base_url,
                "PASSGATE_FUZZ_DATA_DIR": str(data_dir),
                "PASSGATE_FUZZ_EMAIL": FUZZ_EMAIL,
                "PASSGATE_FUZZ_PASSWORD": FUZZ_PASSWORD,
            }
            started = time.monotonic()
            result = subprocess.run(command, cwd=data_dir, env=environment, check=False)
            elapsed = time.monotonic() - started
            cases, statuses = summarize(report)
    for label, seen in sorted(statuses.items()):
        codes = ", ".join(f"{status}: {count}" for status, count in sorted(seen.items()))
        print(f"  {label}: {codes}")
    print(f"schemathesis: {cases} cases in {elapsed:.0f}s, exit code {result.returncode}")
    return result.returncode


def summarize(report: Path) -> tuple[int, dict[str, Counter[int]]]:
    """Cases run, and the status codes seen per operation, from the NDJSON event stream."""
    cases = 0
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    if not report.exists():
        return cases, statuses
    for line in report.read_text().splitlines():
        recorder = json.loads(line).get("ScenarioFinished", {}).get("recorder", {})
        cases += len(recorder.get("cases", {}))
        for interaction in recorder.get("interactions", {}).values():
            response = interaction.get("response") or {}
            if "status_code" in response:
                statuses[recorder.get("label", "?")][response["status_code"]] += 1
    return cases, statuses


if __name__ == "__main__":
    sys.exit(main())
