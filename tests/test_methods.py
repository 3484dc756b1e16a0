"""A 405's Allow header names every method its path answers (RFC 9110 §15.5.6), pages included.

Starlette named only the first route's methods: POST /password-reset's 405 said `Allow: POST`
while GET /password-reset serves the page the mailed link opens, and a fuzzer probing the
path's other methods found that GET answered 200.
"""

from __future__ import annotations

import re
import uuid

import pytest

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
PAGES = ("/password-reset", "/email-verification")


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


async def test_every_405_names_each_method_its_path_answers(app, client):
    paths = sorted({*app.openapi()["paths"], *PAGES})
    for path in paths:
        url = concrete(path)
        answers = {method: await client.request(method, url) for method in METHODS}
        answered = [m for m, response in answers.items() if response.status_code != 405]
        refused = [response for response in answers.values() if response.status_code == 405]
        expected = [*answered, *(["HEAD"] if "GET" in answered else [])]
        for response in refused:
            allow = response.headers["allow"].split(", ")
            assert sorted(allow) == sorted(expected), (path, response.request.method, allow)


@pytest.mark.parametrize("page", PAGES)
async def test_the_api_route_under_a_page_lists_the_page_too(client, page):
    response = await client.put(page)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"
