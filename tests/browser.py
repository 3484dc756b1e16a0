"""Headless Chromium for tests, driven by Playwright: the fixtures the browser tests share.

Needs Debian's Chromium at /usr/bin/chromium (`apt-get install -y chromium`; .ci/run installs
it) and the `playwright` package; Playwright's own browser downloads are never used. Without
them, importing this module skips the test module that imports it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000
# The pictures the docs show: the browser tests take them, the site serves them from here.
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "images"

if not CHROMIUM.exists():
    pytest.skip(
        f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install -y chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing: pip install -e '.[dev]'"
)


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[sync_api.BrowserContext]:
    """Chromium with a fresh profile, so nothing cached or remembered from earlier runs helps."""
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=tmp_path / "chromium-profile",
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(TIMEOUT_MS)
        sync_api.expect.set_options(timeout=TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


class RequestLog:
    """Every URL the page asks for; anything off the service's origin is blocked and kept."""

    def __init__(self, context: sync_api.BrowserContext, base_url: str) -> None:
        self.origin = origin(base_url)
        self.urls: list[str] = []
        context.route("**/*", self._handle)

    def _handle(self, route: sync_api.Route) -> None:
        url = route.request.url
        self.urls.append(url)
        if origin(url) == self.origin:
            route.continue_()
        else:
            route.abort("blockedbyclient")

    def foreign(self) -> list[str]:
        return [url for url in self.urls if origin(url) != self.origin]


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def update_screenshots() -> bool:
    """`UPDATE_SCREENSHOT=1` rewrites the screenshots in docs/images, the only copy."""
    return os.environ.get("UPDATE_SCREENSHOT") == "1"
