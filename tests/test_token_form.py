"""How /token and /revoke read their form bodies (RFC 6749 §3.1, §3.2; RFC 7009 §2.1)."""

from __future__ import annotations

from tests.conftest import DEFAULT_PASSWORD, signup

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def invalid_request(response, description: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "invalid_request", "error_description": description}
    assert response.headers["cache-control"] == "no-store"


async def test_a_parameter_sent_twice_is_an_invalid_request(client):
    await signup(client, email="ada@example.com")

    response = await client.post(
        "/token",
        content=f"grant_type=password&username=ada%40example.com&password={DEFAULT_PASSWORD}"
        "&username=eve%40example.com",
        headers=FORM,
    )

    invalid_request(response, "The username parameter must not be repeated")


async def test_a_parameter_without_a_value_counts_as_omitted(client):
    response = await client.post(
        "/token", content="grant_type=password&username=&password=x", headers=FORM
    )

    invalid_request(response, "The username parameter is required")


async def test_unrecognised_parameters_are_ignored(client):
    await signup(client, email="ada@example.com")

    response = await client.post(
        "/token",
        content=f"grant_type=password&username=ada%40example.com&password={DEFAULT_PASSWORD}"
        "&client_id=demo&unknown=1&unknown=2",
        headers=FORM,
    )

    assert response.status_code == 200, response.text


async def test_percent_encoded_and_plus_encoded_values_are_decoded(client):
    await signup(client, email="ada+tag@example.com", password="correct horse battery")

    response = await client.post(
        "/token",
        content="grant_type=password&username=ada%2Btag%40example.com"
        "&password=correct+horse%20battery",
        headers=FORM,
    )

    assert response.status_code == 200, response.text


async def test_a_multipart_form_is_still_read(client):
    await signup(client, email="ada@example.com")

    response = await client.post(
        "/token",
        files={
            "grant_type": (None, "password"),
            "username": (None, "ada@example.com"),
            "password": (None, DEFAULT_PASSWORD),
        },
    )

    assert response.status_code == 200, response.text


async def test_a_file_in_a_multipart_form_is_refused(client):
    response = await client.post(
        "/token", data={"grant_type": "password"}, files={"upload": ("a.txt", b"x" * 100)}
    )

    invalid_request(response, "The request body is not a valid form")


async def test_a_json_body_is_an_invalid_request(client):
    response = await client.post("/token", json={"grant_type": "password"})

    invalid_request(response, "The request body must be application/x-www-form-urlencoded")


async def test_a_body_that_is_not_utf_8_is_an_invalid_request(client):
    raw = await client.post("/token", content=b"grant_type=password&username=\xff", headers=FORM)
    encoded = await client.post("/token", content="grant_type=password&username=%FF", headers=FORM)

    invalid_request(raw, "The request body is not a valid form")
    invalid_request(encoded, "The request body is not a valid form")


async def test_thousands_of_fields_are_refused_before_any_work(client):
    response = await client.post("/token", content="&".join(["a=b"] * 5000), headers=FORM)

    invalid_request(response, "The request body is not a valid form")


async def test_revoke_reads_its_form_the_same_way(client):
    duplicate = await client.post("/revoke", content="token=a&token=b", headers=FORM)
    missing = await client.post("/revoke", content="token=", headers=FORM)

    invalid_request(duplicate, "The token parameter must not be repeated")
    invalid_request(missing, "The token parameter is required")
