"""The documentation's snippets, run as written against a live server.

A fenced ```bash or ```python block preceded by the line `<!-- test -->` (invisible on the site
and on GitHub; docs/development.md) is run: a page's bash blocks in order in one shell, so
variables carry from step to step as for a reader, each Python block on its own. The server's
address `http://127.0.0.1:8000` in a snippet is replaced by the test server's. Every page runs
twice on the same server, so that no step fails when repeated.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs_pages import INDEX, index_text
from tests.live_server import running_service, server_environment

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED_URL = "http://127.0.0.1:8000"
MARKER = "<!-- test -->"
BLOCK = re.compile(rf"^{re.escape(MARKER)}\n```(bash|python)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])


def snippets(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(page.read_text(encoding="utf-8"))]


MARKED = [page for page in PAGES if snippets(page)]


def test_the_readme_walk_through_is_marked_for_testing() -> None:
    assert ROOT / "README.md" in MARKED
    assert len(snippets(ROOT / "README.md")) >= 5


def test_the_site_home_page_is_the_readme() -> None:
    assert INDEX.read_text(encoding="utf-8") == index_text(), "run: python -m tests.docs_pages"


@pytest.mark.parametrize("page", MARKED, ids=lambda page: page.name)
def test_the_marked_snippets_of_a_page_run_as_written(page: Path, tmp_path: Path) -> None:
    blocks = snippets(page)
    with running_service(tmp_path / "server") as url:
        env = server_environment(tmp_path / "server", {})
        for attempt in ("first", "second"):
            shell = "\n".join(
                ["set -euo pipefail", *(code for kind, code in blocks if kind == "bash")]
            )
            runs = [["bash", "-c", shell.replace(DOCUMENTED_URL, url)]]
            runs += [
                [sys.executable, "-c", code.replace(DOCUMENTED_URL, url)]
                for kind, code in blocks
                if kind == "python"
            ]
            for command in runs:
                if command[-1] == "set -euo pipefail":
                    continue
                result = subprocess.run(
                    command,
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    stdin=subprocess.DEVNULL,
                )
                assert result.returncode == 0, (
                    f"{page.name}, {attempt} run:\n{command[-1]}\n--- stdout\n{result.stdout}"
                    f"\n--- stderr\n{result.stderr}"
                )
                assert "Traceback" not in result.stderr
