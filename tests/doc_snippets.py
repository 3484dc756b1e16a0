"""The documentation's shell and Python blocks, and the markers that say how each is tested.

Every fenced block in README.md and docs/*.md whose language is a shell or Python carries, on
the line right above it, one of these HTML comments (invisible on the site and on GitHub):

    <!-- test -->                 run by tests/test_doc_snippets.py against the page's server
    <!-- test: server -->         the block starts Passgate (it ends in `make run`): run in the
                                  background, as in another terminal, and waited for
    <!-- test: background -->     a long-running helper (an SMTP server), as in another terminal
    <!-- tested: tests/x.py ... -->  run as written by that test file instead
    <!-- not-tested: <reason> -->  cannot run here; the reason says why

`page_script` turns a page's blocks into one bash script that does what a reader would do in
a checkout: bash blocks in one shell, so variables carry from step to step; Python blocks with
the checkout's `.venv/bin/python`; `make run` when the page says "with make run in another
terminal"; all of it twice, so that no step fails when repeated. docs/development.md
describes the convention for writers.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

SHELL_LANGUAGES = frozenset({"bash", "sh", "shell", "console", "zsh"})
PYTHON_LANGUAGES = frozenset({"python", "py", "pycon"})
RUN = "test"
SERVER = "test: server"
BACKGROUND = "test: background"
MARKER = re.compile(
    r"^<!--\s*(test(?::\s*(?:server|background))?|tested:\s*(\S.*?)|not-tested:\s*(\S.*?))\s*-->$"
)
FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w+-]*)")

# The addresses the docs name, and the environment variables that move them in a test run.
# docs/moving-from-flask.md's tutorial app is the Flask one on 5000.
DOCUMENTED_PORTS = {"8000": "PORT", "1025": "SMTP_DEBUG_PORT", "5000": "FLASK_TUTORIAL_PORT"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marker: str | None  # the comment's text, e.g. "test" or "not-tested: needs Docker"

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def is_shell_or_python(self) -> bool:
        return self.language in SHELL_LANGUAGES | PYTHON_LANGUAGES

    @property
    def is_python(self) -> bool:
        return self.language in PYTHON_LANGUAGES

    @property
    def runs_here(self) -> bool:
        return self.marker in (RUN, SERVER, BACKGROUND)


def blocks(page: Path) -> list[Block]:
    """Every fenced block of the page, with the marker on the line above it (if any).

    Fences nest as CommonMark says: a block opened with four backticks holds three-backtick
    lines as text (docs/development.md shows a marked block that way). An indented block (in a
    list item) loses its indentation.
    """
    lines = page.read_text(encoding="utf-8").split("\n")
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, ticks, language = opening.groups()
        end = index + 1
        while end < len(lines) and not re.fullmatch(rf"\s*{ticks}`*\s*", lines[end]):
            end += 1
        body = [
            line[len(indent) :] if line.startswith(indent) else line
            for line in lines[index + 1 : end]
        ]
        above = lines[index - 1].strip() if index else ""
        marker = MARKER.match(above)
        found.append(
            Block(
                page=page,
                line=index + 1,
                language=language.lower(),
                code="\n".join(body) + "\n",
                marker=marker.group(1) if marker else None,
            )
        )
        index = end + 1
    return found


def reason_not_tested(block: Block) -> str | None:
    return (
        block.marker.split(":", 1)[1].strip()
        if block.marker and block.marker.startswith("not-tested:")
        else None
    )


def runner_elsewhere(block: Block) -> Path | None:
    if block.marker and block.marker.startswith("tested:"):
        return ROOT / block.marker.split(":", 1)[1].split()[0]
    return None


def with_test_ports(text: str, ports: dict[str, int]) -> str:
    """The documented ports (DOCUMENTED_PORTS) replaced by the test's free ones."""
    for documented, variable in DOCUMENTED_PORTS.items():
        text = re.sub(rf"(?<![\d.]){documented}(?!\d)", str(ports[variable]), text)
    return text


PROLOGUE = r"""
set -euo pipefail
set -m  # each background job in a process group of its own, so stopping it stops its children
__server=
__helpers=()
__stopping=()
__stop_group() {  # as Ctrl+C in its terminal would, then until every process of it is gone
  kill -TERM -- "-$1" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 -- "-$1" 2>/dev/null || break; sleep 0.05; done
  kill -KILL -- "-$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
__stop_server() {  # Ctrl+C: the port is free at once, while the old process finishes exiting
  if [ -n "$__server" ]; then
    kill -TERM -- "-$__server" 2>/dev/null || true
    for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" || break; sleep 0.05; done
    __stopping+=("$__server")
    __server=
  fi
}
__stop_all() {
  __stop_server
  for pid in "${__stopping[@]}" "${__helpers[@]}"; do __stop_group "$pid"; done
}
trap __stop_all EXIT
__wait_ready() {  # the server started last answers /health/ready, or its log explains why not
  for _ in $(seq 600); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/health/ready" && return 0
    if ! kill -0 "$__server" 2>/dev/null; then echo "the server exited:" >&2; tail -n 40 "$1" >&2; exit 1; fi
    sleep 0.1
  done
  echo "the server was not ready in 60 s:" >&2; tail -n 40 "$1" >&2; exit 1
}
__start_server() {  # $1: a file holding the block that serves
  __stop_server
  local log="$1.log"
  bash -euo pipefail "$1" >"$log" 2>&1 </dev/null &
  __server=$!
  __wait_ready "$log"
}
__start_helper() {
  bash -euo pipefail "$1" >"$1.log" 2>&1 </dev/null &
  __helpers+=("$!")
  sleep 1
  kill -0 "$!" 2>/dev/null || { echo "the helper exited:" >&2; cat "$1.log" >&2; exit 1; }
}
"""

DEFAULT_SERVER = "make run\n"


def page_script(page: Path, scripts: Path, ports: dict[str, int]) -> str:
    """One bash script that runs the page's tested blocks as a reader would, twice.

    Server and helper blocks, and Python blocks, are written to files in `scripts` (the
    script runs them from there); the shell blocks are inlined, in order.
    """
    runnable = [block for block in blocks(page) if block.runs_here]
    needs_default_server = bool(runnable) and runnable[0].marker not in (SERVER, BACKGROUND)
    restarts = any(block.marker == SERVER for block in runnable)
    scripts.mkdir(parents=True, exist_ok=True)
    default = scripts / "make-run.sh"
    default.write_text(DEFAULT_SERVER, encoding="utf-8")

    lines = [PROLOGUE]
    if needs_default_server:
        lines.append(f"__start_server {shlex.quote(str(default))}")
    for attempt in ("first", "second"):
        if attempt == "second" and needs_default_server and restarts:
            lines.append(f"__start_server {shlex.quote(str(default))}")
        for number, block in enumerate(runnable):
            code = with_test_ports(block.code, ports)
            lines.append(f"printf '\\n### %s\\n' '{block.where}, {attempt} run' >&2")
            if block.marker in (SERVER, BACKGROUND) or block.is_python:
                file = scripts / f"{attempt}-{number}.{'py' if block.is_python else 'sh'}"
                file.write_text(code, encoding="utf-8")
                if block.is_python:
                    lines.append(f".venv/bin/python {shlex.quote(str(file))} </dev/null")
                elif block.marker == SERVER:
                    lines.append(f"__start_server {shlex.quote(str(file))}")
                elif attempt == "first":  # a helper keeps running for the second run
                    lines.append(f"__start_helper {shlex.quote(str(file))}")
            else:
                lines.append(code)
    return "\n".join(lines) + "\n"
