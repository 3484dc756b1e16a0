"""Fields the OpenAPI document types as boolean take JSON booleans only (found by schemathesis)."""

from __future__ import annotations

import pytest

from app import commands
from tests.conftest import DEFAULT_PASSWORD, bearer, login, new_user, test_settings


@pytest.mark.parametrize("value", [0, 0.0, 1, "no", "false", "yes", None])
async def test_admin_flags_take_only_a_json_boolean(client, database_url, value):
    await commands.create_admin(
        test_settings(database_url=database_url),
        email="root@example.com",
        name="Root",
        read_password=lambda: DEFAULT_PASSWORD,
    )
    admin = (await login(client, "root@example.com")).json()
    target = await new_user(client)

    response = await client.patch(
        f"/users/{target['id']}", json={"is_active": value}, headers=bearer(admin["access_token"])
    )

    if value is None:  # null means "leave as is", as the document says
        assert response.status_code == 200
        assert response.json()["is_active"] is True
    else:
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "is_active"]
