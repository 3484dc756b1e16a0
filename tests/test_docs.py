"""/docs is served by the service itself, with nothing loaded from elsewhere."""

from __future__ import annotations

import re

from app.docs import SWAGGER_UI_VERSION


async def test_docs_page_loads_its_assets_from_the_service(client):
    response = await client.get("/docs")

    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", response.text)
    assert urls, "the page references no asset"
    assert all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    assert "http://" not in response.text and "https://" not in response.text
    for url in urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url


async def test_docs_page_sends_swagger_ui_to_our_oauth2_redirect_and_openapi_document(client):
    page = (await client.get("/docs")).text

    assert "url: '/openapi.json'" in page
    assert "oauth2RedirectUrl: window.location.origin + '/docs/oauth2-redirect'" in page
    redirect = await client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200
    assert "oauth2" in redirect.text


async def test_served_swagger_ui_is_the_recorded_version(client):
    bundle = await client.get("/docs/assets/swagger-ui-bundle.js")

    assert bundle.status_code == 200
    assert f'PACKAGE_VERSION:"{SWAGGER_UI_VERSION}"' in bundle.text


async def test_redoc_is_not_served_since_it_cannot_work_offline(client):
    assert (await client.get("/redoc")).status_code == 404
