"""/docs in a real browser: headless Chromium, driven by Playwright, against a real server.

It checks what a person on an offline network sees: the page loads only from the service,
Authorize logs in with the password grant, and "Try it out" on GET /users/me answers 200.

Needs Debian's Chromium at /usr/bin/chromium (`apt-get install -y chromium`; .ci/run installs
it) and the `playwright` package; Playwright's own browser downloads are never used. Without
them the tests skip. `UPDATE_SCREENSHOT=1` rewrites the README's screenshot.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import DEFAULT_PASSWORD
from tests.live_server import running_service

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
SCREENSHOT = Path(__file__).parent / "screenshots" / "swagger-ui.png"
TIMEOUT_MS = 20_000

if not CHROMIUM.exists():
    pytest.skip(
        f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install -y chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing: pip install -e '.[dev]'"
)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_service(tmp_path_factory.mktemp("service")) as url:
        yield url


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
        self.origin = _origin(base_url)
        self.urls: list[str] = []
        context.route("**/*", self._handle)

    def _handle(self, route: sync_api.Route) -> None:
        url = route.request.url
        self.urls.append(url)
        if _origin(url) == self.origin:
            route.continue_()
        else:
            route.abort("blockedbyclient")

    def foreign(self) -> list[str]:
        return [url for url in self.urls if _origin(url) != self.origin]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _sign_up(base_url: str) -> str:
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    response = httpx.post(
        f"{base_url}/signup",
        json={"name": "Ada Lovelace", "email": email, "password": DEFAULT_PASSWORD},
        trust_env=False,
    )
    assert response.status_code == 201, response.text
    return email


def test_swagger_ui_signs_in_through_authorize_and_tries_out_users_me(
    base_url: str, browser_context: sync_api.BrowserContext
) -> None:
    email = _sign_up(base_url)
    requests = RequestLog(browser_context, base_url)
    page = browser_context.new_page()

    page.goto(f"{base_url}/docs")
    sync_api.expect(page.locator(".swagger-ui .info .title")).to_contain_text("Passgate")
    sync_api.expect(page.locator("#operations-accounts-read_me")).to_be_visible()

    # Authorize: the OAuth2 password flow against /token, email as the username.
    page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".modal-ux")
    dialog.locator("#oauth_username").fill(email)
    dialog.locator("#oauth_password").fill(DEFAULT_PASSWORD)
    with page.expect_response(lambda response: response.url.endswith("/token")) as token:
        dialog.locator("button.authorize").click()
    assert token.value.status == 200
    sync_api.expect(dialog.get_by_role("button", name="Remove authorization")).to_be_visible()
    dialog.get_by_role("button", name="Close").click()

    # Try it out on GET /users/me, which needs the bearer token Authorize obtained.
    operation = page.locator("#operations-accounts-read_me")
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    with page.expect_response(lambda response: response.url.endswith("/users/me")) as me:
        operation.locator("button.execute").click()
    assert me.value.status == 200
    assert (me.value.request.header_value("authorization") or "").startswith("Bearer ")
    live_response = operation.locator(".live-responses-table .response")
    sync_api.expect(live_response.locator(".response-col_status")).to_contain_text("200")
    sync_api.expect(live_response.locator(".response-col_description")).to_contain_text(email)

    assert requests.foreign() == [], "requests that left the service"
    asked_for = {urlsplit(url).path for url in requests.urls}
    assert {
        "/docs",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/openapi.json",
        "/token",
        "/users/me",
    } <= asked_for

    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        # From the page's title down to the response body: Authorize, the route, its answer.
        body = live_response.locator(".response-col_description .highlight-code").first
        box = body.bounding_box()
        assert box is not None
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(
            path=SCREENSHOT,
            full_page=True,
            clip={"x": 0, "y": 0, "width": 1280, "height": box["y"] + box["height"] + 16},
        )
