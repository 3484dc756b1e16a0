from tests.conftest import bearer, new_user


async def test_signup_login_and_me(client):
    user = await new_user(client)
    response = await client.get("/users/me", headers=bearer(user["access_token"]))
    assert response.status_code == 200, response.text
    assert response.json()["email"] == user["email"]
