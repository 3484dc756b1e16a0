"""The pages that links in mail open: GET /password-reset and GET /email-verification.

Each is a small HTML document rendered from app/templates/pages, with its script and style
served as files from app/static, so the pages run under a Content-Security-Policy that allows
no inline code at all: an injected `<script>` or `style=` does nothing.

The token travels in the URL fragment, which browsers never send to a server, so it reaches no
access log and no `Referer`. The page's script reads it, removes it from the address bar and
history, and spends it only when the person submits the form: opening a link (as mail
scanners do) spends nothing, and these routes never touch the database.
"""

from __future__ import annotations

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.schemas import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH

STATIC_URL = "/static"
PASSWORD_RESET_PAGE = "/password-reset"  # noqa: S105 - a path, not a password
EMAIL_VERIFICATION_PAGE = "/email-verification"

# Only the service's own files, and nothing else: no inline script or style, no plugins, no
# <base> to redirect relative URLs, no posting forms elsewhere, no framing (clickjacking).
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    # The middleware sets these on every answer; repeated here so that the page's guarantees
    # do not depend on the middleware's order or defaults.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    # A page of a single-use link is nobody's search result, and no other window may script it.
    "X-Robots-Tag": "noindex, nofollow",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def install_pages(app: FastAPI) -> None:
    """Serve the two pages and the static files their scripts and styles come from."""
    app.state.page_templates = jinja2.Environment(
        loader=jinja2.PackageLoader("app", "templates/pages"),
        autoescape=True,  # every value, including the operator's product name, is escaped
        undefined=jinja2.StrictUndefined,  # a missing value is a bug, not an empty string
        auto_reload=False,  # the templates ship in the package; read each once
    )
    app.mount(STATIC_URL, StaticFiles(packages=[("app", "static")]), name="static")
    app.add_api_route(PASSWORD_RESET_PAGE, password_reset_page, include_in_schema=False)
    app.add_api_route(EMAIL_VERIFICATION_PAGE, email_verification_page, include_in_schema=False)


def _render(request: Request, template: str) -> HTMLResponse:
    templates: jinja2.Environment = request.app.state.page_templates
    html = templates.get_template(template).render(
        product_name=request.app.state.settings.product_name,
        password_min_length=PASSWORD_MIN_LENGTH,
        password_max_length=PASSWORD_MAX_LENGTH,
    )
    return HTMLResponse(html, headers=PAGE_HEADERS)


async def password_reset_page(request: Request) -> HTMLResponse:
    """The page a password-reset link opens: a form for the new password."""
    return _render(request, "password-reset.html")


async def email_verification_page(request: Request) -> HTMLResponse:
    """The page a verification link opens: a button that confirms the address."""
    return _render(request, "email-verification.html")
