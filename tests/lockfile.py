"""The lock files' link to pyproject.toml: a digest of the dependency tables they were made from.

`make lock` resolves requirements/*.txt with uv and then runs `python -m tests.lockfile stamp`,
which writes the digest of pyproject.toml's dependency tables into each file's header.
tests/test_lockfile.py recomputes it offline: a change to the dependencies without `make lock`
fails the suite instead of shipping an image built from an older resolution.
"""

import hashlib
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
STAMP_PREFIX = "# pyproject.toml dependencies sha256: "


def dependencies_digest(pyproject: Path = PYPROJECT) -> str:
    """sha256 of what a resolution depends on: requires-python and every dependency table."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
    }
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def recorded_digest(lock: Path) -> str | None:
    """The digest a lock file's header records, or None when it records none."""
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line.startswith(STAMP_PREFIX):
            return line.removeprefix(STAMP_PREFIX).strip()
        if not line.startswith("#"):
            return None
    return None


def stamp(lock: Path, digest: str) -> None:
    """Write the digest into the lock's header, after uv's own comment lines."""
    lines = [
        line
        for line in lock.read_text(encoding="utf-8").splitlines()
        if not line.startswith(STAMP_PREFIX)
    ]
    header_end = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    lines.insert(header_end, STAMP_PREFIX + digest)
    lock.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "stamp":
        print("usage: python -m tests.lockfile stamp LOCK_FILE...", file=sys.stderr)
        return 2
    digest = dependencies_digest()
    for name in argv[1:]:
        stamp(Path(name), digest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
