"""The password-reset and email-verification pages in headless Chromium, against a real server.

The first tests watch what the pages do with any token; the last ones follow links from real
mail: a service process delivering to an aiosmtpd server, as a person would receive them.

Chromium and Playwright as tests/browser.py describes; without them the tests skip.
`UPDATE_SCREENSHOT=1` rewrites docs/images/password-reset.png (docs/recovery-pages.md shows it).
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests import browser
from tests.browser import RequestLog, sync_api
from tests.conftest import DEFAULT_PASSWORD
from tests.live_server import running_service, server_environment
from tests.mail import Captured, MailServer
from tests.processes import ServiceProcess, free_port, start_service

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


# End to end: a real service process delivering to a real SMTP server, and a link from the mail.


@dataclass
class MailingService:
    url: str
    mail: MailServer
    process: ServiceProcess


@pytest.fixture
def mailing_service(tmp_path: Path) -> Iterator[MailingService]:
    """A service that sends its mail to an aiosmtpd server, its links built from PUBLIC_URL."""
    mail = MailServer()
    mail.start()
    port = free_port()
    env = server_environment(
        tmp_path,
        {
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(mail.port),
            "SMTP_TLS": "none",
            "MAIL_POLL_INTERVAL_SECONDS": "0.2",
            "MAIL_RETRY_BASE_SECONDS": "0.2",
        },
    )
    # Access logs on: the test reads them to see that no token ever reached the server.
    service = start_service(env, tmp_path, port=port)
    try:
        service.wait_ready()
        yield MailingService(url=service.url, mail=mail, process=service)
    finally:
        service.stop()
        mail.stop()


def _post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, trust_env=False, timeout=10, **kwargs)


def _sign_up(service: MailingService) -> str:
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    response = _post(
        f"{service.url}/signup",
        json={"name": "Ada Lovelace", "email": email, "password": DEFAULT_PASSWORD},
    )
    assert response.status_code == 201, response.text
    return email


def _mail(service: MailingService, to: str, subject: str) -> Captured:
    [mail] = service.mail.wait_for_blocking(to, subject=subject, within=30)
    return mail


def _login(service: MailingService, email: str, password: str) -> httpx.Response:
    return _post(
        f"{service.url}/token",
        data={"grant_type": "password", "username": email, "password": password},
    )


def test_a_reset_link_from_a_real_mail_sets_a_new_password_in_the_browser(
    mailing_service: MailingService, browser_context: sync_api.BrowserContext, tmp_path: Path
) -> None:
    service = mailing_service
    email = _sign_up(service)
    response = _post(f"{service.url}/password-reset", json={"email": email})
    assert response.status_code == 202, response.text
    mail = _mail(service, email, "Reset your")
    link = mail.link
    assert link == f"{service.url}/password-reset#token={mail.token}"

    requests = RequestLog(browser_context, service.url)
    # A mail scanner opening the link first, script and all, spends nothing.
    scanner, _, scanner_posts = _open(browser_context, link)
    sync_api.expect(scanner.get_by_label("New password", exact=True)).to_be_visible()
    scanner.close()
    assert scanner_posts == []

    page, problems, _ = _open(browser_context, link)
    assert page.url == f"{service.url}/password-reset"
    field = page.get_by_label("New password", exact=True)

    # The password policy's answer (the API's 422) appears next to the field.
    field.fill("password")
    page.get_by_role("button", name="Set new password").click()
    error = page.locator("#new-password-error")
    sync_api.expect(error).to_have_text(
        "The password is too common: it appears in lists of leaked passwords."
    )
    sync_api.expect(field).to_have_attribute("aria-invalid", "true")
    sync_api.expect(field).to_be_focused()
    shot = tmp_path / "password-reset.png"
    panel = page.locator("main").bounding_box()
    assert panel is not None
    margin = 32
    page.screenshot(
        path=shot,
        clip={
            "x": panel["x"] - margin,
            "y": 0,
            "width": panel["width"] + 2 * margin,
            "height": panel["y"] + panel["height"] + margin,
        },
    )
    if browser.update_screenshots():
        browser.SCREENSHOTS.mkdir(exist_ok=True)
        shutil.copyfile(shot, browser.SCREENSHOTS / "password-reset.png")

    new_password = "difference-engine-1822"
    field.fill(new_password)
    with page.expect_response(lambda r: r.url.endswith("/password-reset/confirm")) as confirmed:
        page.get_by_role("button", name="Set new password").click()
    assert confirmed.value.status == 204
    sync_api.expect(page.get_by_role("heading", level=1)).to_have_text(
        "Your password has been changed"
    )
    sync_api.expect(error).to_be_hidden()

    assert _login(service, email, new_password).status_code == 200
    assert _login(service, email, DEFAULT_PASSWORD).status_code == 400
    # The link worked once: opened again, it offers a new one.
    page.goto(link)
    page.get_by_label("New password", exact=True).fill("another-new-password-42")
    page.get_by_role("button", name="Set new password").click()
    sync_api.expect(page.get_by_role("heading", level=1)).to_have_text(
        "This reset link no longer works"
    )
    sync_api.expect(page.get_by_label("Email address")).to_be_visible()

    assert requests.foreign() == [], "requests that left the service"
    assert {urlsplit(url).path for url in requests.urls} >= {
        "/password-reset",
        "/static/recovery.js",
        "/static/pages.css",
        "/password-reset/confirm",
    }
    assert problems.messages == []
    service.process.stop()
    log = service.process.log.read_text(errors="replace")
    assert "GET /password-reset " in log, "the access log was not on"
    assert mail.token not in log


def test_a_verification_link_from_the_signup_mail_confirms_the_address_in_the_browser(
    mailing_service: MailingService, browser_context: sync_api.BrowserContext
) -> None:
    service = mailing_service
    email = _sign_up(service)
    mail = _mail(service, email, "Confirm your email")
    assert mail.link == f"{service.url}/email-verification#token={mail.token}"

    requests = RequestLog(browser_context, service.url)
    page, problems, posts = _open(browser_context, mail.link)
    assert posts == []
    with page.expect_response(lambda r: r.url.endswith("/email-verification/confirm")) as done:
        page.get_by_role("button", name="Confirm", exact=True).click()
    assert done.value.status == 200
    sync_api.expect(page.get_by_role("heading", level=1)).to_have_text(
        "Your email address is confirmed"
    )
    sync_api.expect(page.locator("#verified-email")).to_have_text(email)

    tokens = _login(service, email, DEFAULT_PASSWORD).json()
    me = httpx.get(
        f"{service.url}/users/me",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        trust_env=False,
    )
    assert me.json()["email_verified"] is True
    assert requests.foreign() == []
    assert problems.messages == []


def test_the_request_form_of_a_spent_link_mails_a_fresh_one(
    mailing_service: MailingService, browser_context: sync_api.BrowserContext
) -> None:
    service = mailing_service
    email = _sign_up(service)
    page, _, _ = _open(browser_context, f"{service.url}/password-reset#token=not-a-real-token")
    page.get_by_label("New password", exact=True).fill("difference-engine-1822")
    page.get_by_role("button", name="Set new password").click()
    sync_api.expect(page.get_by_role("heading", level=1)).to_have_text(
        "This reset link no longer works"
    )
    page.get_by_label("Email address").fill(email)
    with page.expect_response(lambda r: r.url.endswith("/password-reset")) as asked:
        page.get_by_role("button", name="Send me a new link").click()
    assert asked.value.status == 202
    sync_api.expect(page.locator("#status")).to_have_text(asked.value.json()["detail"])
    mail = _mail(service, email, "Reset your")
    assert mail.link.startswith(f"{service.url}/password-reset#token=")
