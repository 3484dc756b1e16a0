"""The site's home page is the README, with its links made relative to docs/ (`python -m tests.docs_pages`)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
INDEX = ROOT / "docs" / "index.md"


def index_text() -> str:
    """README.md as docs/index.md: `(docs/x.md)` becomes `(x.md)`, the folder link the home page."""
    text = README.read_text(encoding="utf-8")
    return text.replace("](docs/)", "](index.md)").replace("](docs/", "](")


def main() -> int:
    INDEX.write_text(index_text(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
