"""/openapi.json tells the truth: every answer a route gives, with the body it really has."""

from __future__ import annotations

import json
from typing import Any

import pytest

# Every operation and every status code it can answer with (API.md, plus 413/429 from the
# request limits, 400 for a JSON body that is not even text, 503 while the database is away).
EXPECTED_STATUSES: dict[tuple[str, str], set[str]] = {
    ("post", "/signup"): {"201", "400", "409", "413", "422", "429", "503"},
    ("get", "/users"): {"200", "401", "422", "503"},
    ("get", "/users/me"): {"200", "401", "503"},
    ("delete", "/users/me"): {"204", "401", "503"},
    ("post", "/users/me/password"): {"204", "400", "401", "413", "422", "429", "503"},
    ("get", "/users/{user_id}"): {"200", "401", "404", "422", "503"},
    ("patch", "/users/{user_id}"): {"200", "400", "401", "403", "404", "413", "422", "503"},
    ("delete", "/users/{user_id}"): {"204", "401", "403", "404", "422", "503"},
    ("post", "/token"): {"200", "400", "403", "413", "429", "503"},
    ("post", "/revoke"): {"200", "400", "413", "503"},
    ("post", "/logout"): {"204", "401", "503"},
    ("get", "/users/me/sessions"): {"200", "401", "503"},
    ("get", "/users/me/mfa"): {"200", "401", "503"},
    ("post", "/users/me/mfa/totp"): {"201", "400", "401", "409", "413", "422", "429", "503"},
    ("delete", "/users/me/mfa/totp"): {"204", "400", "401", "413", "422", "429", "503"},
    ("post", "/users/me/mfa/totp/confirm"): {
        "200",
        "400",
        "401",
        "409",
        "413",
        "422",
        "429",
        "503",
    },
    ("post", "/users/me/mfa/recovery-codes"): {
        "200",
        "400",
        "401",
        "409",
        "413",
        "422",
        "429",
        "503",
    },
    ("delete", "/users/{user_id}/mfa"): {"204", "401", "403", "404", "422", "503"},
    ("delete", "/users/me/sessions"): {"204", "401", "422", "503"},
    ("delete", "/users/me/sessions/{session_id}"): {"204", "401", "404", "422", "503"},
    ("get", "/users/{user_id}/sessions"): {"200", "401", "403", "404", "422", "503"},
    ("delete", "/users/{user_id}/sessions"): {"204", "401", "403", "404", "422", "503"},
    ("get", "/health"): {"200"},
    ("get", "/health/ready"): {"200", "503"},
    ("get", "/.well-known/jwks.json"): {"200"},
    ("get", "/.well-known/oauth-authorization-server"): {"200"},
    ("post", "/introspect"): {"200", "400", "401", "413", "429", "503"},
    ("patch", "/users/me"): {"200", "400", "401", "404", "413", "422", "503"},
    ("post", "/users/me/email"): {"202", "400", "401", "409", "413", "422", "429", "503"},
    ("post", "/password-reset"): {"202", "400", "413", "422", "429", "503"},
    ("post", "/password-reset/confirm"): {"204", "400", "413", "422", "503"},
    ("post", "/email-verification"): {"202", "400", "413", "422", "429", "503"},
    ("post", "/email-verification/confirm"): {"200", "400", "409", "413", "422", "503"},
}
PUBLIC = {
    ("post", "/password-reset"),
    ("post", "/password-reset/confirm"),
    ("post", "/email-verification"),
    ("post", "/email-verification/confirm"),
    ("post", "/signup"),
    ("post", "/token"),
    ("post", "/revoke"),
    ("get", "/health"),
    ("get", "/health/ready"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/.well-known/oauth-authorization-server"),
    ("post", "/introspect"),
}
OAUTH_ENDPOINTS = {("post", "/token"), ("post", "/revoke"), ("post", "/introspect")}


@pytest.fixture
async def document(client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def schema_ref(response: dict[str, Any]) -> str:
    return response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]


async def test_every_operation_lists_exactly_the_status_codes_it_can_answer(document):
    documented = {key: set(op["responses"]) for key, op in operations(document).items()}

    assert documented == EXPECTED_STATUSES


async def test_the_bearer_schemes_are_on_exactly_the_protected_operations(document):
    schemes = document["components"]["securitySchemes"]
    password_flow = schemes["OAuth2PasswordBearer"]
    assert password_flow["type"] == "oauth2"
    assert password_flow["flows"]["password"]["tokenUrl"] == "token"
    # For accounts with a second factor, which the password flow's dialog cannot complete.
    assert schemes["AccessToken"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["AccessToken"]["description"],
    }
    assert set(schemes) == {"OAuth2PasswordBearer", "AccessToken"}

    for key, operation in operations(document).items():
        if key in PUBLIC:
            assert not operation.get("security"), key
        else:
            assert operation["security"] == [{"OAuth2PasswordBearer": []}, {"AccessToken": []}], key


async def test_protected_operations_document_401_with_the_bearer_challenge(document):
    for key, operation in operations(document).items():
        if key in PUBLIC:
            continue
        unauthorized = operation["responses"]["401"]
        assert schema_ref(unauthorized) == "ErrorOut", key
        assert "WWW-Authenticate" in unauthorized["headers"], key


async def test_token_endpoints_document_rfc_6749_errors(document):
    for key in OAUTH_ENDPOINTS:
        responses = operations(document)[key]["responses"]
        assert schema_ref(responses["400"]) == "OAuthErrorOut", key
    throttled = operations(document)[("post", "/token")]["responses"]["429"]
    assert schema_ref(throttled) == "OAuthErrorOut"
    error = document["components"]["schemas"]["OAuthErrorOut"]
    assert set(error["required"]) == {"error", "error_description"}


async def test_every_other_error_uses_the_detail_shape(document):
    """Including a 413 on the token endpoints: the body limit answers before any route runs."""
    oauth_shaped = {(*key, status) for key in OAUTH_ENDPOINTS for status in ("400", "429")}
    oauth_shaped.add(("post", "/introspect", "401"))  # RFC 6749 §5.2's invalid_client
    for key, operation in operations(document).items():
        for status, response in operation["responses"].items():
            if (*key, status) == ("post", "/token", "403"):
                continue  # mfa_required: test_token_documents_the_mfa_required_answer
            if status in {"400", "401", "403", "404", "409", "413", "429"}:
                expected = "OAuthErrorOut" if (*key, status) in oauth_shaped else "ErrorOut"
                assert schema_ref(response) == expected, (key, status)


async def test_validation_errors_reference_the_sanitized_schema_not_fastapis(document):
    for key, operation in operations(document).items():
        if "422" in operation["responses"]:
            assert schema_ref(operation["responses"]["422"]) == "ValidationErrorOut", key
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "HTTPValidationError" not in json.dumps(document)
    issue = schemas["ValidationIssue"]
    assert set(issue["properties"]) == {"loc", "msg", "type"}
    items = schemas["ValidationErrorOut"]["properties"]["detail"]["items"]
    assert items == {"$ref": "#/components/schemas/ValidationIssue"}


async def test_a_real_validation_error_has_the_documented_shape(client, document):
    response = await client.post("/signup", json={"name": "", "email": "x", "password": "short"})

    assert response.status_code == 422
    body = response.json()
    properties = document["components"]["schemas"]["ValidationIssue"]["properties"]
    for issue in body["detail"]:
        assert set(issue) == set(properties)


async def test_rate_limited_operations_document_429_with_retry_after(document):
    limited = {
        ("post", "/token"),
        ("post", "/signup"),
        ("post", "/users/me/password"),
        ("post", "/introspect"),
        ("post", "/users/me/email"),
        ("post", "/password-reset"),
        ("post", "/email-verification"),
        ("post", "/users/me/mfa/totp"),
        ("post", "/users/me/mfa/totp/confirm"),
        ("delete", "/users/me/mfa/totp"),
        ("post", "/users/me/mfa/recovery-codes"),
    }
    for key, operation in operations(document).items():
        responses = operation["responses"]
        assert ("429" in responses) == (key in limited), key
        if key in limited:
            assert responses["429"]["headers"]["Retry-After"]["required"] is True


async def test_every_request_body_documents_413_and_offers_examples(document):
    with_body = [key for key, op in operations(document).items() if "requestBody" in op]
    assert set(with_body) == {
        ("post", "/signup"),
        ("post", "/users/me/password"),
        ("patch", "/users/{user_id}"),
        ("post", "/token"),
        ("post", "/revoke"),
        ("post", "/introspect"),
        ("patch", "/users/me"),
        ("post", "/users/me/email"),
        ("post", "/password-reset"),
        ("post", "/password-reset/confirm"),
        ("post", "/email-verification"),
        ("post", "/email-verification/confirm"),
        ("post", "/users/me/mfa/totp"),
        ("post", "/users/me/mfa/totp/confirm"),
        ("delete", "/users/me/mfa/totp"),
        ("post", "/users/me/mfa/recovery-codes"),
    }
    for key in with_body:
        operation = operations(document)[key]
        assert "413" in operation["responses"], key
        for media in operation["requestBody"]["content"].values():
            assert media["examples"], key


async def test_token_endpoints_take_a_form_body_as_rfc_6749_requires(document):
    for key in OAUTH_ENDPOINTS:
        content = operations(document)[key]["requestBody"]["content"]
        assert list(content) == ["application/x-www-form-urlencoded"], key


async def test_every_operation_has_one_documented_tag(document):
    declared = {tag["name"] for tag in document["tags"]}
    for key, operation in operations(document).items():
        assert len(operation["tags"]) == 1, key
        assert operation["tags"][0] in declared, key
    used = {op["tags"][0] for op in operations(document).values()}
    assert used == declared


async def test_operation_ids_are_the_route_names(document):
    ids = [operation["operationId"] for operation in operations(document).values()]
    assert len(ids) == len(set(ids))
    assert operations(document)[("post", "/token")]["operationId"] == "issue_token"
    assert operations(document)[("get", "/users/me")]["operationId"] == "read_me"


async def test_signup_documents_the_location_header(document):
    created = operations(document)[("post", "/signup")]["responses"]["201"]
    assert "Location" in created["headers"]


async def test_token_forms_mark_the_fields_a_client_must_send_and_never_offer_null(document):
    schemas = document["components"]["schemas"]
    forms = {
        key: operations(document)[key]["requestBody"]["content"][
            "application/x-www-form-urlencoded"
        ]["schema"]["$ref"].rsplit("/", 1)[-1]
        for key in OAUTH_ENDPOINTS
    }
    assert schemas[forms["post", "/token"]]["required"] == ["grant_type"]
    assert schemas[forms["post", "/token"]]["properties"]["grant_type"]["enum"] == [
        "password",
        "refresh_token",
        "urn:passgate:params:oauth:grant-type:mfa-otp",
        "urn:passgate:params:oauth:grant-type:mfa-recovery-code",
    ]
    assert schemas[forms["post", "/revoke"]]["required"] == ["token"]
    for name in forms.values():
        for field in schemas[name]["properties"].values():
            assert field["type"] == "string", name


async def test_database_outages_are_documented_as_503_with_retry_after(document):
    for key, operation in operations(document).items():
        if key in {
            ("get", "/health"),
            ("get", "/.well-known/jwks.json"),
            ("get", "/.well-known/oauth-authorization-server"),
            ("get", "/health/ready"),
        }:
            continue
        unavailable = operation["responses"]["503"]
        assert schema_ref(unavailable) == "ErrorOut", key
        assert unavailable["headers"]["Retry-After"]["required"] is True, key
    ready = operations(document)[("get", "/health/ready")]["responses"]["503"]
    assert schema_ref(ready) == "HealthOut"


async def test_token_documents_the_mfa_required_answer_and_the_mfa_grants_fields(document):
    token = operations(document)[("post", "/token")]
    mfa_required = token["responses"]["403"]
    assert schema_ref(mfa_required) == "MfaRequiredOut"
    assert "mfa_required" in mfa_required["description"]
    schemas = document["components"]["schemas"]
    answer = schemas["MfaRequiredOut"]
    assert set(answer["required"]) == {"error", "error_description", "mfa_token", "mfa_methods"}
    assert answer["properties"]["error"]["const"] == "mfa_required"
    form = schemas["TokenRequest"]["properties"]
    assert {"mfa_token", "otp", "recovery_code"} <= set(form)
    assert "mfa-otp" in form["grant_type"]["description"]
