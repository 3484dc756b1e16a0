"""`python -m app`: the commands that need no settings load none of the service to run.

Each command runs in a fresh interpreter, as an operator runs it, and reports the modules it
had loaded when it finished: `--help`, generate-secret and generate-key must work without the
web stack (FastAPI, SQLAlchemy, Pydantic...), which costs about a second of imports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The service's frameworks and the modules of ours that load them.
WEB_STACK = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "pydantic",
    "pydantic_settings",
    "uvicorn",
    "alembic",
    "jinja2",
    "app.config",
    "app.commands",
    "app.main",
)
# Runs `python -m app ARGS...` in this interpreter, then writes the loaded top modules to the
# file named by PROBE_OUTPUT, whatever the command's exit status.
PROBE = """
import json, os, runpy, sys
sys.argv = ["python -m app", *sys.argv[1:]]
try:
    runpy.run_module("app", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    status = exc.code
with open(os.environ["PROBE_OUTPUT"], "w") as out:
    json.dump({"status": status, "modules": sorted(sys.modules)}, out)
"""


def run_probed(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    output = tmp_path / "probe.json"
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=tmp_path,
        env={
            **env,
            "PYTHONPATH": str(ROOT),
            "PROBE_OUTPUT": str(output),
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, json.loads(output.read_text())


def web_stack_in(modules: list[str]) -> list[str]:
    return [name for name in modules if name.split(".")[0] in WEB_STACK or name in WEB_STACK]


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["serve", "--help"],
        ["generate-secret"],
        ["generate-key", "--alg", "ES256"],
        ["generate-key", "--alg", "RS256", "--bits", "1024"],  # refused: one line, status 1
    ],
    ids=["help", "serve-help", "generate-secret", "generate-key", "generate-key-refused"],
)
def test_commands_that_need_no_settings_load_no_web_stack(tmp_path, args):
    result, probe = run_probed(tmp_path, *args)

    assert web_stack_in(probe["modules"]) == [], result.stderr
    if args[-1] == "1024":
        assert probe["status"] == 1
        assert result.stderr == "passgate: RSA keys need at least 2048 bits\n"
    else:
        assert probe["status"] in (0, None), result.stderr  # argparse's --help exits 0
        assert result.stdout


def test_generate_secret_and_help_do_not_even_load_the_key_code(tmp_path):
    for args in (["--help"], ["generate-secret"]):
        _, probe = run_probed(tmp_path, *args)
        assert "cryptography" not in probe["modules"]


def test_the_probe_sees_the_web_stack_that_other_commands_load(tmp_path):
    # The check above is only worth something if it can fail: create-admin reads the settings
    # (refusing the address before touching the database) and loads the stack to do so.
    result, probe = run_probed(tmp_path, "create-admin", "--email", "not-an-address")

    assert probe["status"] == 1
    assert result.stderr.startswith("passgate: --email: ")
    assert {"app.commands", "app.config", "sqlalchemy", "pydantic"} <= set(
        web_stack_in(probe["modules"])
    )
