"""Interactive documentation served by the service itself: Swagger UI at /docs.

FastAPI's own pages load their JavaScript and CSS from a public CDN, and so show a blank page
on any network that cannot reach it. Here the assets come from the `fastapi-offline` package,
pinned in pyproject.toml, which ships Swagger UI as package data; only its files are used,
through our own routes.

There is no /redoc: ReDoc's bundle always loads its logo from cdn.redoc.ly, so it cannot be
served entirely by the service.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.openapi import install_openapi

# What fastapi-offline 1.7.7 bundles; tests/test_docs.py checks that the two agree.
SWAGGER_UI_VERSION = "5.32.6"

ASSETS_URL = "/docs/assets"
SWAGGER_UI_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"

# Swagger UI settings beyond FastAPI's defaults.
SWAGGER_UI_PARAMETERS = {
    # No badge fetched from validator.swagger.io: the page makes no request outside the service.
    "validatorUrl": None,
    "displayRequestDuration": True,
    "persistAuthorization": False,
}


def install_docs(app: FastAPI) -> None:
    """Serve /docs, its OAuth2 redirect page and assets, and the completed OpenAPI document.

    Create the app with `docs_url=None, redoc_url=None`, so FastAPI's CDN pages are not added.
    """
    install_openapi(app)
    app.mount(
        ASSETS_URL,
        StaticFiles(packages=[("fastapi_offline", "static")]),
        name="docs-assets",
    )
    app.swagger_ui_oauth2_redirect_url = OAUTH2_REDIRECT_URL
    app.add_api_route(SWAGGER_UI_URL, swagger_ui, include_in_schema=False)
    app.add_api_route(OAUTH2_REDIRECT_URL, swagger_ui_oauth2_redirect, include_in_schema=False)


async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI; its Authorize button logs in with the password grant at /token."""
    root = request.scope.get("root_path", "")
    app: FastAPI = request.app
    return get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
        swagger_ui_parameters={**(app.swagger_ui_parameters or {}), **SWAGGER_UI_PARAMETERS},
    )


async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    """Where an OAuth 2.0 server sends the browser back to Swagger UI (redirect-based flows)."""
    return get_swagger_ui_oauth2_redirect_html()
