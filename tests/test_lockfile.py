"""The lock files in requirements/ match pyproject.toml (offline: no resolution, no network).

A change to pyproject.toml's dependencies without `make lock` fails here, so the image and
`make` never install an older resolution than the ranges the package declares.
"""

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.lockfile import PYPROJECT, ROOT, dependencies_digest, recorded_digest

LOCKS = {
    # lock file: the extras of pyproject.toml it was resolved with
    "runtime": (ROOT / "requirements" / "runtime.txt", ()),
    "dev": (ROOT / "requirements" / "dev.txt", ("dev",)),
    "fuzz": (ROOT / "requirements" / "fuzz.txt", ("dev", "fuzz")),
    "docs": (ROOT / "requirements" / "docs.txt", ("docs",)),
}
RELOCK = "run `make lock` and commit requirements/ (docs/dependencies.md)"


def pins(lock: Path) -> dict[tuple[str, str], Requirement]:
    """The lock's requirements by (name, marker), from its backslash-continued lines."""
    text = lock.read_text(encoding="utf-8").replace("\\\n", " ")
    found: dict[tuple[str, str], Requirement] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split(" --")
        requirement = Requirement(spec)
        assert any(option.startswith("hash=sha256:") for option in options), (
            f"{lock.name}: {requirement.name} has no hash"
        )
        found[(canonicalize_name(requirement.name), str(requirement.marker or ""))] = requirement
    return found


def direct_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    names = list(project["dependencies"])
    for extra in extras:
        names += project["optional-dependencies"][extra]
    return [Requirement(name) for name in names]


@pytest.mark.parametrize("name", LOCKS)
def test_the_lock_was_made_from_the_current_dependencies(name):
    lock, _ = LOCKS[name]
    assert recorded_digest(lock) == dependencies_digest(), (
        f"pyproject.toml's dependencies changed since {lock.name} was made: {RELOCK}"
    )


@pytest.mark.parametrize("name", LOCKS)
def test_the_lock_pins_every_direct_dependency_within_its_range(name):
    lock, extras = LOCKS[name]
    locked = pins(lock)
    for requirement in direct_requirements(extras):
        candidates = [
            pinned
            for (pinned_name, _), pinned in locked.items()
            if pinned_name == canonicalize_name(requirement.name)
        ]
        assert candidates, f"{requirement.name} is not in {lock.name}: {RELOCK}"
        for pinned in candidates:
            (version,) = [spec.version for spec in pinned.specifier]
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{lock.name} pins {pinned.name} {version}, outside {requirement}: {RELOCK}"
            )


@pytest.mark.parametrize(("smaller", "larger"), [("runtime", "dev"), ("dev", "fuzz")])
def test_each_lock_agrees_with_the_larger_one(smaller, larger):
    small, large = pins(LOCKS[smaller][0]), pins(LOCKS[larger][0])
    for key, requirement in small.items():
        assert key in large, f"{key[0]} is in {smaller} but not {larger}: {RELOCK}"
        assert str(large[key].specifier) == str(requirement.specifier), (
            f"{key[0]}: {smaller} pins {requirement.specifier}, {larger} {large[key].specifier}"
        )


def test_a_changed_dependency_changes_the_digest(tmp_path):
    """The first check can fail: another range, a new dependency or extra, another Python."""

    def digest(dependencies: str, extras: str = "", python: str = ">=3.11") -> str:
        pyproject = tmp_path / "pyproject.toml"
        pyproject.write_text(
            f'[project]\nrequires-python = "{python}"\ndependencies = [{dependencies}]\n'
            f"[project.optional-dependencies]\n{extras}\n",
            encoding="utf-8",
        )
        return dependencies_digest(pyproject)

    base = digest('"anyio>=4.4"', 'dev = ["pytest>=8"]')
    assert digest('"anyio>=4.4"', 'dev = ["pytest>=8"]') == base
    assert digest('"anyio>=4.5"', 'dev = ["pytest>=8"]') != base
    assert digest('"anyio>=4.4", "six"', 'dev = ["pytest>=8"]') != base
    assert digest('"anyio>=4.4"', 'dev = ["pytest>=8", "ruff"]') != base
    assert digest('"anyio>=4.4"', 'dev = ["pytest>=8"]', python=">=3.12") != base
