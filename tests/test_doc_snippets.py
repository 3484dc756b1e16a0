"""The documentation's snippets, run as written in a checkout against a live server.

Every shell and Python block of README.md and docs/*.md is marked (tests/doc_snippets.py lists
the markers; docs/development.md explains them): run here, run by another named test, or not
tested for a stated reason. A page's runnable blocks run as one bash script in a folder that
looks like a fresh checkout (the real one's `.venv`, `Makefile`, `app`... linked in, its own
`data/`), with a reader's environment (no Passgate setting inherited), twice. The only change
made to the blocks is the port: 8000 (and the SMTP server's 1025) become free ones.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from app.config import Settings
from tests.doc_snippets import (
    DOCUMENTED_PORTS,
    PAGES,
    ROOT,
    blocks,
    page_script,
    reason_not_tested,
    runner_elsewhere,
)
from tests.docs_pages import INDEX, index_text
from tests.flask_tutorial import create_tutorial_app, sign_up
from tests.processes import free_port

# What a fresh checkout has that the blocks use; each is linked into the test's folder.
CHECKOUT = (
    ".venv",
    "Makefile",
    "pyproject.toml",
    "requirements",
    "app",
    "alembic",
    "alembic.ini",
    "tests",
)
# Make's own variables, and the Makefile's, which a reader's shell does not set.
MAKE_VARIABLES = {
    "MAKEFLAGS",
    "MAKELEVEL",
    "MFLAGS",
    "MAKEOVERRIDES",
    "PYTHON",
    "VENV",
    "BIN",
    "HOST",
    "WORKERS",
    "FORWARDED_ALLOW_IPS",
    "PYTEST_ARGS",
}
PAGE_TIMEOUT_SECONDS = 300
BASH = shutil.which("bash") or "/bin/bash"

RUN_HERE = [page for page in PAGES if any(block.runs_here for block in blocks(page))]


def test_every_shell_and_python_block_says_how_it_is_tested() -> None:
    unmarked, misplaced, dangling = [], [], []
    for page in PAGES:
        for block in blocks(page):
            if block.is_shell_or_python and block.marker is None:
                unmarked.append(block.where)
            if block.marker and not block.is_shell_or_python:
                misplaced.append(f"{block.where} ({block.language or 'no language'})")
            elsewhere = runner_elsewhere(block)
            if elsewhere and not (
                elsewhere.is_file() and block.page.name in elsewhere.read_text(encoding="utf-8")
            ):
                dangling.append(f"{block.where}: {elsewhere.relative_to(ROOT)} does not run it")
    assert not unmarked, (
        "blocks without <!-- test -->, <!-- tested: ... --> or <!-- not-tested: reason -->: "
        + ", ".join(unmarked)
    )
    assert not misplaced, "markers on blocks that are neither shell nor Python: " + ", ".join(
        misplaced
    )
    assert not dangling, "; ".join(dangling)


def test_every_fenced_block_names_its_language() -> None:
    # A block without one could be a shell session that the marker check above cannot see.
    nameless = [block.where for page in PAGES for block in blocks(page) if not block.language]
    assert not nameless, nameless


def test_the_marker_check_sees_blocks_however_they_are_fenced(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```sh\nmake run\n```\n\n1. a step\n\n   <!-- test -->\n   ```bash\n"
        "   curl -s http://127.0.0.1:8000/health\n   ```\n\n"
        "<!-- not-tested: needs a container engine -->\n````markdown\n```python\nx = 1\n```\n````\n",
        encoding="utf-8",
    )
    found = [(block.language, block.marker, block.code) for block in blocks(page)]
    assert found == [
        ("sh", None, "make run\n"),
        ("bash", "test", "curl -s http://127.0.0.1:8000/health\n"),
        ("markdown", "not-tested: needs a container engine", "```python\nx = 1\n```\n"),
    ]


def test_a_block_left_untested_says_why_in_words() -> None:
    reasons = [reason_not_tested(block) for page in PAGES for block in blocks(page)]
    vague = [reason for reason in reasons if reason is not None and len(reason.split()) < 3]
    assert not vague, vague


def test_the_readme_walk_through_is_marked_for_testing() -> None:
    assert ROOT / "README.md" in RUN_HERE
    assert sum(block.runs_here for block in blocks(ROOT / "README.md")) >= 5


def test_the_site_home_page_is_the_readme() -> None:
    assert INDEX.read_text(encoding="utf-8") == index_text(), "run: python -m tests.docs_pages"


def reader_environment(ports: dict[str, int]) -> dict[str, str]:
    """The test's environment without any Passgate setting or make variable, plus the ports."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if name.lower() not in Settings.model_fields and name not in MAKE_VARIABLES
    }
    return {**kept, **{name: str(port) for name, port in ports.items()}}


def checkout_copy(folder: Path) -> Path:
    folder.mkdir()
    for name in CHECKOUT:
        (folder / name).symlink_to(ROOT / name)
    return folder


@contextlib.contextmanager
def flask_tutorial_app(beside: Path, port: int) -> Iterator[None]:
    """What docs/moving-from-flask.md assumes: the tutorial app in ../my-flask-app, serving."""
    database = beside / "my-flask-app" / "instance" / "site.db"
    database.parent.mkdir(parents=True)
    app = create_tutorial_app(database)
    sign_up(app, name="Ada Lovelace", email="ada@example.com", password="s3cret-passw0rd")
    server = make_server("127.0.0.1", port, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        thread.join()


def what_the_page_assumes(
    page: Path, beside: Path, ports: dict[str, int]
) -> contextlib.AbstractContextManager[None]:
    if page.name == "moving-from-flask.md":
        return flask_tutorial_app(beside, ports["FLASK_TUTORIAL_PORT"])
    return contextlib.nullcontext()


@dataclass(frozen=True)
class PageRun:
    returncode: int
    stdout: str
    stderr: str
    logs: dict[str, str]  # the servers' and helpers' output, by file name


def run_page(page: Path, folder: Path) -> PageRun:
    """The page's blocks, run twice by one bash script in a checkout of their own."""
    ports = {variable: free_port() for variable in DOCUMENTED_PORTS.values()}
    checkout = checkout_copy(folder / "checkout")
    script = page_script(page, folder / "blocks", ports)
    # A session of its own: no terminal, so a prompt reads the empty standard input and fails.
    with what_the_page_assumes(page, folder, ports):
        result = subprocess.run(
            [BASH, "-c", script],
            cwd=checkout,
            env=reader_environment(ports),
            capture_output=True,
            text=True,
            timeout=PAGE_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            check=False,
        )
    logs = {log.name: log.read_text(errors="replace") for log in (folder / "blocks").glob("*.log")}
    return PageRun(result.returncode, result.stdout, result.stderr, logs)


# The README is docs/index.md too: its blocks run once, under the README's name.
TESTED_PAGES = [page for page in RUN_HERE if page != INDEX]


@pytest.fixture(scope="module")
def page_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[Path, Future[PageRun]]]:
    """Every selected page's run, all started at once: most of a run is waiting for a server
    to start or stop, so side by side they take little longer than the slowest alone."""
    selected = [
        item.callspec.params["page"]
        for item in request.session.items
        if item.originalname == "test_the_blocks_of_a_page_run_as_written_twice"
    ]
    with ThreadPoolExecutor(max_workers=max(1, len(selected))) as pool:
        yield {
            page: pool.submit(run_page, page, tmp_path_factory.mktemp(page.stem))
            for page in selected
        }


@pytest.mark.parametrize("page", TESTED_PAGES, ids=lambda page: page.name)
def test_the_blocks_of_a_page_run_as_written_twice(
    page: Path, page_runs: dict[Path, Future[PageRun]]
) -> None:
    run = page_runs[page].result(timeout=PAGE_TIMEOUT_SECONDS + 60)
    output = f"--- stdout\n{run.stdout[-6000:]}\n--- stderr\n{run.stderr[-6000:]}"
    assert run.returncode == 0, output
    assert "Traceback" not in run.stdout + run.stderr, output
    for name, log in run.logs.items():
        assert "Traceback" not in log, f"{name}:\n{log[-6000:]}"
