"""/docs in a real browser: headless Chromium, driven by Playwright, against a real server.

It checks what a person on an offline network sees: the page loads only from the service,
Authorize logs in with the password grant, and "Try it out" on GET /users/me answers 200.

Chromium and Playwright as tests/browser.py describes; without them the tests skip.
`UPDATE_SCREENSHOT=1` rewrites the README's screenshot.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pyotp
import pytest

from tests import browser
from tests.browser import SCREENSHOTS, RequestLog, sync_api, update_screenshots
from tests.conftest import DEFAULT_PASSWORD
from tests.live_server import running_service

SCREENSHOT = SCREENSHOTS / "swagger-ui.png"
browser_context = browser.browser_context  # the shared fixture, for this module's tests


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_service(tmp_path_factory.mktemp("service")) as url:
        yield url


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
        dialog.get_by_role("button", name="Apply given OAuth2 credentials").click()
    assert token.value.status == 200
    sync_api.expect(dialog.get_by_role("button", name="Remove authorization")).to_be_visible()
    dialog.get_by_role("button", name="Close").first.click()

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

    if update_screenshots():
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


def test_an_account_with_a_second_factor_pastes_its_access_token_into_authorize(
    base_url: str, browser_context: sync_api.BrowserContext
) -> None:
    """docs/mfa.md: the password form cannot do the second step; the AccessToken box can."""
    email = _sign_up(base_url)
    with httpx.Client(base_url=base_url, trust_env=False) as client:
        first = client.post(
            "/token",
            data={"grant_type": "password", "username": email, "password": DEFAULT_PASSWORD},
        ).json()
        headers = {"Authorization": f"Bearer {first['access_token']}"}
        secret = client.post(
            "/users/me/mfa/totp", json={"current_password": DEFAULT_PASSWORD}, headers=headers
        ).json()["secret"]
        client.post(
            "/users/me/mfa/totp/confirm", json={"code": pyotp.TOTP(secret).now()}, headers=headers
        )
        challenge = client.post(
            "/token",
            data={"grant_type": "password", "username": email, "password": DEFAULT_PASSWORD},
        ).json()
        assert challenge["error"] == "mfa_required"
        tokens = client.post(
            "/token",
            data={
                "grant_type": "urn:passgate:params:oauth:grant-type:mfa-otp",
                "mfa_token": challenge["mfa_token"],
                "otp": pyotp.TOTP(secret).at(time.time() + 30),
            },
        ).json()
    page = browser_context.new_page()
    page.goto(f"{base_url}/docs")
    sync_api.expect(page.locator("#operations-accounts-read_me")).to_be_visible()

    page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".modal-ux")
    box = dialog.locator(".auth-container").filter(has_text="AccessToken")
    box.locator("input").fill(tokens["access_token"])
    box.get_by_role("button", name="Apply credentials").click()
    dialog.get_by_role("button", name="Close").first.click()

    operation = page.locator("#operations-accounts-read_me")
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    with page.expect_response(lambda response: response.url.endswith("/users/me")) as me:
        operation.locator("button.execute").click()
    assert me.value.status == 200
    assert me.value.request.header_value("authorization") == f"Bearer {tokens['access_token']}"
