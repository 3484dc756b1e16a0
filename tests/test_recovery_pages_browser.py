"""The password-reset and email-verification pages in headless Chromium, against a real server.

Chromium and Playwright as tests/browser.py describes; without them the tests skip.
`UPDATE_SCREENSHOT=1` rewrites tests/screenshots/password-reset.png (docs/recovery-pages.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import browser
from tests.browser import RequestLog, sync_api
from tests.live_server import running_service

browser_context = browser.browser_context  # the shared fixture, for this module's tests

# Never a real token: these tests only watch what the page does with whatever it is given.
SAMPLE_TOKEN = "sample-token-from-the-fragment_0123456789abcdefghijklmnopqrstu"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_service(tmp_path_factory.mktemp("service")) as url:
        yield url


class PageProblems:
    """Console errors and Content-Security-Policy violations: each one is a broken page."""

    def __init__(self, page: sync_api.Page) -> None:
        self.messages: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.messages.append(f"pageerror: {error}"))

    def _console(self, message: sync_api.ConsoleMessage) -> None:
        # A failed POST logs an error of its own: the tests below judge those by status.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.messages.append(message.text)


def _open(
    context: sync_api.BrowserContext, url: str
) -> tuple[sync_api.Page, PageProblems, list[sync_api.Request]]:
    page = context.new_page()
    problems = PageProblems(page)
    posts: list[sync_api.Request] = []
    page.on("request", lambda request: posts.append(request) if request.method == "POST" else None)
    page.goto(url)
    page.wait_for_load_state("networkidle")
    return page, problems, posts


def test_the_reset_page_takes_the_token_out_of_the_address_bar(
    base_url: str, browser_context: sync_api.BrowserContext
) -> None:
    requests = RequestLog(browser_context, base_url)
    page, problems, posts = _open(
        browser_context, f"{base_url}/password-reset#token={SAMPLE_TOKEN}"
    )

    sync_api.expect(page.get_by_label("New password", exact=True)).to_be_visible()
    assert page.url == f"{base_url}/password-reset"
    assert SAMPLE_TOKEN not in page.evaluate("window.location.href")
    # The entry was replaced, not added to: behind it is only the blank page the tab began on.
    assert page.evaluate("window.history.length") == 2
    # Opening the page (as a mail scanner would, script and all) sends no token anywhere.
    assert posts == []
    assert not any(SAMPLE_TOKEN in url for url in requests.urls)
    assert problems.messages == []
    assert requests.foreign() == []
    page.go_back()
    assert page.url == "about:blank"
    page.go_forward()
    assert page.url == f"{base_url}/password-reset"


def test_the_reset_form_posts_the_token_and_the_new_password_as_json(
    base_url: str, browser_context: sync_api.BrowserContext
) -> None:
    page, problems, posts = _open(
        browser_context, f"{base_url}/password-reset#token={SAMPLE_TOKEN}"
    )
    page.get_by_label("New password", exact=True).fill("a-new-password-for-ada")
    with page.expect_request(lambda request: request.method == "POST") as sent:
        page.get_by_role("button", name="Set new password").click()

    request = sent.value
    assert request.url == f"{base_url}/password-reset/confirm"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.post_data or "") == {
        "token": SAMPLE_TOKEN,
        "new_password": "a-new-password-for-ada",
    }
    assert not request.headers.get("referer")
    assert len(posts) == 1
    assert problems.messages == []


def test_a_new_link_opened_in_the_same_tab_replaces_the_token(
    base_url: str, browser_context: sync_api.BrowserContext
) -> None:
    page, problems, _ = _open(browser_context, f"{base_url}/password-reset#token=first-token")
    sync_api.expect(page.get_by_label("New password", exact=True)).to_be_visible()
    # Only the fragment differs, so the browser navigates within the page and reloads nothing.
    page.goto(f"{base_url}/password-reset#token={SAMPLE_TOKEN}")
    page.wait_for_load_state("networkidle")
    sync_api.expect(page).to_have_url(f"{base_url}/password-reset")
    page.get_by_label("New password", exact=True).fill("a-new-password-for-ada")
    with page.expect_request(lambda request: request.method == "POST") as sent:
        page.get_by_role("button", name="Set new password").click()
    assert json.loads(sent.value.post_data or "")["token"] == SAMPLE_TOKEN
    assert problems.messages == []


def test_the_show_password_box_reveals_what_was_typed(
    base_url: str, browser_context: sync_api.BrowserContext
) -> None:
    page, _, _ = _open(browser_context, f"{base_url}/password-reset#token={SAMPLE_TOKEN}")
    field = page.get_by_label("New password", exact=True)
    sync_api.expect(field).to_have_attribute("type", "password")
    page.get_by_label("Show password").check()
    sync_api.expect(field).to_have_attribute("type", "text")


@pytest.mark.parametrize(
    ("path", "heading"),
    [
        ("/password-reset", "This reset link is incomplete"),
        ("/email-verification", "This confirmation link is incomplete"),
    ],
)
def test_a_page_opened_without_a_token_offers_to_send_a_new_link(
    base_url: str, browser_context: sync_api.BrowserContext, path: str, heading: str
) -> None:
    page, problems, posts = _open(browser_context, f"{base_url}{path}")
    sync_api.expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    sync_api.expect(page.get_by_label("Email address")).to_be_visible()
    sync_api.expect(page.get_by_role("button", name="Send me a new link")).to_be_visible()
    assert page.locator("form[action$='/confirm']").is_hidden()
    assert posts == []
    assert problems.messages == []


def test_the_verification_page_confirms_only_when_the_button_is_pressed(
    base_url: str, browser_context: sync_api.BrowserContext
) -> None:
    page, problems, posts = _open(
        browser_context, f"{base_url}/email-verification#token={SAMPLE_TOKEN}"
    )
    confirm = page.get_by_role("button", name="Confirm", exact=True)
    sync_api.expect(confirm).to_be_visible()
    assert page.url == f"{base_url}/email-verification"
    assert posts == []

    with page.expect_request(lambda request: request.method == "POST") as sent:
        confirm.click()
    assert sent.value.url == f"{base_url}/email-verification/confirm"
    assert json.loads(sent.value.post_data or "") == {"token": SAMPLE_TOKEN}
    assert problems.messages == []


def test_the_pages_work_with_the_policy_enforced_and_nothing_inline(
    base_url: str, browser_context: sync_api.BrowserContext, tmp_path: Path
) -> None:
    # The policy blocks anything inline; the page still renders its styles and runs its script,
    # so everything it needs comes from its own files.
    page, problems, _ = _open(browser_context, f"{base_url}/password-reset#token={SAMPLE_TOKEN}")
    violations = page.evaluate(
        """() => new Promise((resolve) => {
            const seen = [];
            document.addEventListener("securitypolicyviolation", (e) => seen.push(e.violatedDirective));
            const s = document.createElement("script");
            s.textContent = "window.inlineRan = true";
            document.head.append(s);
            setTimeout(() => resolve({seen, inlineRan: window.inlineRan === true}), 200);
        })"""
    )
    assert violations["inlineRan"] is False
    assert violations["seen"] == ["script-src-elem"]
    # The stylesheet applied: the form's panel is not the browser's default transparent.
    background = page.evaluate("getComputedStyle(document.querySelector('main')).backgroundColor")
    assert background not in ("rgba(0, 0, 0, 0)", "transparent")
    assert problems.messages == [m for m in problems.messages if "Content Security Policy" in m]
