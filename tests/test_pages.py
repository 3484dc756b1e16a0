"""The pages that links in mail open, over HTTP: headers, markup, and assets from the service.

What they do in a browser is tests/test_recovery_pages_browser.py.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.main import create_app
from app.pages import PAGE_CSP
from tests.conftest import test_settings

PAGES = ["/password-reset", "/email-verification"]


class Markup(HTMLParser):
    """The parts of a page that a CSP or an accessibility check cares about."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.inline_code: list[str] = []
        self._open: str | None = None
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        self._open = tag
        self._in_title = tag == "title"
        if tag == "style":
            self.inline_code.append("<style>")
        for name in attributes:
            if name.startswith("on") or name == "style":
                self.inline_code.append(f"<{tag} {name}=...>")

    def handle_endtag(self, tag: str) -> None:
        self._open = None
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._open == "script" and data.strip():
            self.inline_code.append(f"<script>{data.strip()[:40]}")
        if self._in_title:
            self.title += data

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attributes for name, attributes in self.elements if name == tag]


def parse(html: str) -> Markup:
    markup = Markup()
    markup.feed(html)
    markup.close()
    return markup


@pytest.mark.parametrize("path", PAGES)
async def test_a_page_answers_html_under_a_strict_content_security_policy(client, path):
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Content-Security-Policy"] == (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    assert PAGE_CSP == response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", PAGES)
async def test_a_page_has_no_inline_script_or_style_for_the_policy_to_allow(client, path):
    markup = parse((await client.get(path)).text)
    assert markup.inline_code == []
    scripts = markup.all("script")
    assert scripts, "the page's behaviour comes from a script file"
    assert all(script.get("src") for script in scripts)


@pytest.mark.parametrize("path", PAGES)
async def test_every_asset_of_a_page_comes_from_the_service_itself(client, path):
    page_url = f"http://test{path}"
    markup = parse((await client.get(path)).text)
    assets = [attrs["src"] for attrs in markup.all("script")] + [
        attrs["href"] for attrs in markup.all("link")
    ]
    assert len(assets) == 2
    for asset in assets:
        assert asset is not None
        url = urljoin(page_url, asset)
        assert urlsplit(url).netloc == "test", f"{asset} is not on the service"
        response = await client.get(urlsplit(url).path)
        assert response.status_code == 200, asset
        expected = "text/javascript" if asset.endswith(".js") else "text/css"
        assert response.headers["Content-Type"].startswith(expected)
        assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", PAGES)
async def test_forms_post_only_to_the_service_routes_of_api_md(client, path):
    markup = parse((await client.get(path)).text)
    actions = {
        urlsplit(urljoin(f"http://test{path}", form["action"] or "")).path
        for form in markup.all("form")
    }
    assert actions == {f"{path}/confirm", path}


@pytest.mark.parametrize("path", PAGES)
async def test_every_field_of_a_page_has_a_label(client, path):
    markup = parse((await client.get(path)).text)
    labelled = {label["for"] for label in markup.all("label")}
    inputs = markup.all("input")
    assert inputs
    for field in inputs:
        assert field.get("id") in labelled, f"input {field} has no <label for=...>"
    assert markup.all("html")[0].get("lang") == "en"
    assert len(markup.all("h1")) == 1
    # Whatever the script says appears in a live region, so screen readers announce it.
    assert any(p.get("role") == "status" for p in markup.all("p"))


async def test_the_new_password_field_describes_the_policy_and_its_error(client):
    markup = parse((await client.get("/password-reset")).text)
    (field,) = [attrs for attrs in markup.all("input") if attrs.get("name") == "new_password"]
    assert field["type"] == "password"
    assert field["autocomplete"] == "new-password"
    described_by = (field["aria-describedby"] or "").split()
    ids = {attrs.get("id") for _, attrs in markup.elements}
    assert "new-password-error" in described_by
    assert set(described_by) <= ids


async def test_the_verification_page_offers_a_confirm_button(client):
    markup = parse((await client.get("/email-verification")).text)
    buttons = [attrs for attrs in markup.all("button") if attrs.get("type") == "submit"]
    assert len(buttons) == 2  # confirm, and ask for a new link
    html = (await client.get("/email-verification")).text
    assert ">Confirm</button>" in html


@pytest.mark.parametrize("path", PAGES)
async def test_a_page_names_the_product_from_settings_escaped(tmp_path, path):
    settings = test_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        product_name='Ada & Co <script>alert("x")</script>',
    )
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get(path)
    assert "<script>alert" not in response.text
    assert "Ada &amp; Co &lt;script&gt;" in response.text
    assert parse(response.text).title.endswith('· Ada & Co <script>alert("x")</script>')
    assert "Passgate" not in response.text


@pytest.mark.parametrize("path", PAGES)
async def test_a_page_never_names_the_host_the_request_claims(client, path):
    response = await client.get(
        path, headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    )
    assert response.status_code == 200
    assert "evil.example" not in response.text


async def test_static_files_outside_the_folder_are_not_served(client):
    for path in ("/static/../config.py", "/static/%2e%2e/config.py", "/static/"):
        response = await client.get(path)
        assert response.status_code == 404, path


@pytest.mark.parametrize("name", ["", "   ", "Ada\nBcc: everyone@example.com", "x" * 101])
def test_a_product_name_that_is_not_one_printable_line_is_refused(name):
    with pytest.raises(ValueError, match="product_name"):
        test_settings(product_name=name)
