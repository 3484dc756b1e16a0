"""Request and response bodies, named as in API.md."""

from __future__ import annotations

import datetime as dt
import functools
import json
import unicodedata
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    StringConstraints,
    WithJsonSchema,
    field_serializer,
)

from app.email_addresses import canonical_email, email_key
from app.security import normalize_password

if TYPE_CHECKING:
    from app.models import Account

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
NAME_MAX_LENGTH = 100
EMAIL_MAX_LENGTH = 254  # RFC 5321's limit on a forward path, less the angle brackets


def reject_unstorable(value: str) -> str:
    """Refuse NUL bytes, other control characters and lone surrogates.

    PostgreSQL cannot store NUL in text and no database can store a lone surrogate as UTF-8;
    caught here they are a 422 instead of a driver error turned 500.
    """
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs" or (category == "Cc" and char not in "\t"):
            raise ValueError("must not contain control characters or unpaired surrogates")
    return value


@functools.cache
def _common_passwords() -> frozenset[str]:
    # zxcvbn ships the 30,000 passwords seen most often in leaked password dumps.
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def check_password_policy(password: str) -> str:
    """8 to 128 characters of any script, and not one of the commonest leaked passwords.

    The length holds both as typed, which is what the schema's minLength and maxLength count,
    and as hashed (normalised): `ö` typed as two code points is one character, and `¾`, one
    code point, is three once normalised; so neither form can stretch a short password past
    the limit or a long one under it. Full-width letters do not hide a common password.
    """
    reject_unstorable(password)
    normalized = normalize_password(password)
    if min(len(password), len(normalized)) < PASSWORD_MIN_LENGTH:
        raise ValueError(f"must be at least {PASSWORD_MIN_LENGTH} characters long")
    if max(len(password), len(normalized)) > PASSWORD_MAX_LENGTH:
        raise ValueError(f"must be at most {PASSWORD_MAX_LENGTH} characters long")
    if normalized.lower() in _common_passwords():
        raise ValueError("is too common: it appears in lists of leaked passwords")
    return password


def _check_name(name: str) -> str:
    reject_unstorable(name)
    if not name:
        raise ValueError("must not be blank")
    return name


# Lengths are checked by a validator (not max_length) so an oversized password is reported by
# the policy with a message that never repeats the value.
NewPassword = Annotated[str, AfterValidator(check_password_policy)]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=NAME_MAX_LENGTH),
    AfterValidator(_check_name),
]


def _check_raw_email(value: object) -> object:
    if isinstance(value, str):
        reject_unstorable(value)
        if len(value) > EMAIL_MAX_LENGTH:
            raise ValueError(f"must be at most {EMAIL_MAX_LENGTH} characters long")
    return value


def _canonical_email(value: str) -> str:
    email_key(value)  # refuses, with a 422, an address whose key would not fit the column
    return canonical_email(value)


# The one normalisation (app/email_addresses.py), with email-validator's messages as the 422's.
Email = Annotated[
    StrictStr,
    BeforeValidator(_check_raw_email),
    AfterValidator(_canonical_email),
    WithJsonSchema({"type": "string", "format": "email"}),
]


class UserCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Ada Lovelace",
                    "email": "ada@example.com",
                    "password": "analytical-engine-1843",
                }
            ]
        },
    )

    name: Name = Field(description="1 to 100 characters after trimming.")
    email: Email = Field(
        description="Stored normalised; compared without regard to case or Unicode spelling: "
        "one account per address."
    )
    password: NewPassword = Field(
        description="8 to 128 characters, any script; common leaked passwords are refused.",
        json_schema_extra={"format": "password", "minLength": 8, "maxLength": 128},
    )


class UserUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"is_active": False}, {"name": "Ada", "is_admin": True}]},
    )

    name: Name | None = None
    # Strict: lax parsing would read "no", 0 or 0.0 as false, and the document promises booleans.
    is_active: StrictBool | None = None
    is_admin: StrictBool | None = None


class PasswordChange(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "current_password": "analytical-engine-1843",
                    "new_password": "difference-engine-1822",
                }
            ]
        },
    )

    current_password: Annotated[str, StringConstraints(max_length=1024)] = Field(
        json_schema_extra={"format": "password"}
    )
    new_password: NewPassword = Field(
        json_schema_extra={"format": "password", "minLength": 8, "maxLength": 128}
    )


# Mailed tokens are 43 characters; anything far longer is refused before it is hashed.
OneTimeTokenText = Annotated[str, StringConstraints(max_length=512)]


class PasswordResetRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"email": "ada@example.com"}]}
    )

    email: Email


class EmailVerificationRequest(PasswordResetRequest):
    pass


class PasswordResetConfirm(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "token": "<token from the link's #token= fragment>",
                    "new_password": "difference-engine-1822",
                }
            ]
        },
    )

    token: OneTimeTokenText = Field(description="The `token` from the mailed link's fragment.")
    new_password: NewPassword = Field(
        json_schema_extra={"format": "password", "minLength": 8, "maxLength": 128}
    )


class EmailVerificationConfirm(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"token": "<token from the link's #token= fragment>"}]},
    )

    token: OneTimeTokenText = Field(description="The `token` from the mailed link's fragment.")


class ProfileUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "Ada"}]})

    name: Name = Field(description="1 to 100 characters after trimming.")


class EmailChange(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"new_email": "ada@lovelace.example", "current_password": "analytical-engine-1843"}
            ]
        },
    )

    new_email: Email
    current_password: Annotated[str, StringConstraints(max_length=1024)] = Field(
        json_schema_extra={"format": "password"}
    )


class AcceptedOut(BaseModel):
    detail: str


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    email: str
    email_verified: bool
    is_active: bool
    is_admin: bool
    created_at: dt.datetime

    @field_serializer("created_at")
    def _utc_iso(self, value: dt.datetime) -> str:
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class UserPage(BaseModel):
    users: list[UserOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


def _iso_utc(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


_encode_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _user_object(
    id_: uuid.UUID,
    name: str,
    email: str,
    email_verified: bool,
    is_active: bool,
    is_admin: bool,
    created_at: dt.datetime,
) -> dict[str, Any]:
    """What `UserOut` dumps to, in its field order, from values our own database gave."""
    return {
        "id": str(id_),
        "name": name,
        "email": email,
        "email_verified": email_verified,
        "is_active": is_active,
        "is_admin": is_admin,
        "created_at": _iso_utc(created_at),
    }


def user_page_json(
    users: Iterable[tuple[uuid.UUID, str, str, bool, bool, bool, dt.datetime]],
    next_cursor: str | None,
) -> bytes:
    """The JSON of a `UserPage`, built straight from row tuples in `UserOut`'s field order.

    Validating 50 `UserOut`s and serialising them cost more server CPU than the rest of a
    `GET /users`; the rows come from our own database, in the column types' own conversions,
    so there is nothing to validate. The bytes are the ones FastAPI renders for the model
    (tests/test_users.py compares them), so the two can never drift apart.
    """
    return _encode_json(
        {"users": [_user_object(*row) for row in users], "next_cursor": next_cursor}
    ).encode()


def user_json(user: Account) -> bytes:
    """The JSON of a `UserOut`, built straight from the bearer check's row (GET /users/me).

    The same bytes FastAPI renders for the model (tests/test_users.py compares them), without
    validating a row our own database gave: that and the serialiser's call back into
    `_utc_iso` cost GET /users/me about 9 us of its 120 (tests/bench/w1_cost.py).
    """
    return _encode_json(
        _user_object(
            user.id,
            user.name,
            user.email,
            user.email_verified,
            user.is_active,
            user.is_admin,
            user.created_at,
        )
    ).encode()


class SessionOut(BaseModel):
    """One login: every access and refresh token descended from one password grant."""

    id: uuid.UUID
    created_at: dt.datetime
    last_used_at: dt.datetime = Field(description="The login, or its latest refresh.")
    expires_at: dt.datetime = Field(description="When its refresh token expires, unless used.")
    ip: str | None = Field(
        description="The client address at login, as the login throttle sees it "
        "(an IPv6 client by its /64 block)."
    )
    user_agent: str | None = Field(
        description="The login request's User-Agent, at most 256 characters."
    )
    amr: list[str] = Field(
        description='How the login was proven (RFC 8176): ["pwd"], ["pwd", "otp", "mfa"] or ["pwd", "mfa"].'
    )
    current: bool = Field(description="Whether the access token of this request belongs to it.")

    @field_serializer("created_at", "last_used_at", "expires_at")
    def _utc_iso(self, value: dt.datetime) -> str:
        return _iso_utc(value)


class SessionsOut(BaseModel):
    sessions: list[SessionOut] = Field(description="Live sessions, newest first.")


MFA_OTP_GRANT = "urn:passgate:params:oauth:grant-type:mfa-otp"
MFA_RECOVERY_CODE_GRANT = "urn:passgate:params:oauth:grant-type:mfa-recovery-code"
GRANT_TYPES = ["password", "refresh_token", MFA_OTP_GRANT, MFA_RECOVERY_CODE_GRANT]

CurrentPassword = Annotated[str, StringConstraints(max_length=1024)]
# A TOTP code (6 digits, spaces allowed) or a recovery code (hyphens and spaces allowed).
Code = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(reject_unstorable)
]


class TokenRequest(BaseModel):
    """The form of POST /token (RFC 6749 §4.3.2 and §6), for the OpenAPI document.

    app.forms reads the body; this model only describes it.
    """

    grant_type: str | None = Field(
        None,
        description="`password` or `refresh_token`; after a `mfa_required` answer, "
        f"`{MFA_OTP_GRANT}` (with `mfa_token` and `otp`) or `{MFA_RECOVERY_CODE_GRANT}` "
        "(with `mfa_token` and `recovery_code`).",
        examples=["password"],
        json_schema_extra={"enum": GRANT_TYPES},
    )
    username: str | None = Field(
        None, description="Your email, for the password grant.", examples=["ada@example.com"]
    )
    password: str | None = Field(
        None,
        description="Your password, for the password grant.",
        examples=["analytical-engine-1843"],
        json_schema_extra={"format": "password"},
    )
    refresh_token: str | None = Field(None, description="For the refresh_token grant.")
    scope: str | None = Field(None, description="Ignored: tokens carry no scopes.")
    mfa_token: str | None = Field(
        None, description="For the MFA grants: the `mfa_token` of the `mfa_required` answer."
    )
    otp: str | None = Field(
        None, description=f"For `{MFA_OTP_GRANT}`: the 6-digit code of your authenticator app."
    )
    recovery_code: str | None = Field(
        None,
        description=f"For `{MFA_RECOVERY_CODE_GRANT}`: one of your recovery codes "
        "(case, spaces and hyphens do not matter).",
    )


class RevokeRequest(BaseModel):
    """The form of POST /revoke (RFC 7009 §2.1), for the OpenAPI document."""

    token: str | None = Field(
        None,
        description="A refresh token (or an access token).",
        examples=["<refresh token from POST /token>"],
    )
    token_type_hint: str | None = Field(None, description="Optional; ignored.")


class IntrospectionRequest(BaseModel):
    """The form of POST /introspect (RFC 7662 §2.1), for the OpenAPI document."""

    token: str | None = Field(
        None,
        description="An access token or a refresh token.",
        examples=["<access or refresh token>"],
    )
    token_type_hint: str | None = Field(
        None,
        description="`access_token` or `refresh_token`; optional, the token's form decides.",
    )


class IntrospectionOut(BaseModel):
    """RFC 7662 §2.2: `{"active": false}` alone, or a live token's claims."""

    active: bool
    token_type: Literal["access_token", "refresh_token"] | None = None
    sub: str | None = Field(None, description="The user's id.")
    exp: int | None = None
    iat: int | None = None
    iss: str | None = None
    aud: str | None = Field(None, description="Present when JWT_AUDIENCE is configured.")
    jti: str | None = None
    amr: list[str] | None = Field(None, description="RFC 8176 authentication methods.")
    sid: str | None = Field(None, description="The login (session) the token belongs to.")


class AuthorizationServerMetadataOut(BaseModel):
    """RFC 8414 §2 authorization server metadata."""

    issuer: str
    token_endpoint: str
    revocation_endpoint: str
    introspection_endpoint: str
    jwks_uri: str | None = Field(None, description="Present with RS256 or ES256.")
    grant_types_supported: list[str]
    response_types_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    revocation_endpoint_auth_methods_supported: list[str]
    introspection_endpoint_auth_methods_supported: list[str]
    service_documentation: str


class TokenResponse(BaseModel):
    """RFC 6749 §5.1 successful token response."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the RFC 6749 token type, not a secret
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str


class MfaRequiredOut(BaseModel):
    """The password was right, and the account has a second factor: no tokens yet.

    Post the `mfa_token` back to /token with a code, within 5 minutes, with one of the
    `mfa_methods`' grants.
    """

    error: Literal["mfa_required"]
    error_description: str
    mfa_token: str = Field(description="Spent by its success; dies after 5 wrong codes.")
    mfa_methods: list[Literal["totp", "recovery_code"]]


class MfaStatusOut(BaseModel):
    totp_enabled: bool
    recovery_codes_left: int


class TotpEnrolmentCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"current_password": "analytical-engine-1843"}]},
    )

    current_password: CurrentPassword = Field(json_schema_extra={"format": "password"})


class TotpEnrolmentOut(BaseModel):
    """A pending TOTP secret: add it to an authenticator app, then confirm it with a code."""

    secret: str = Field(description="The secret in base32 (160 bits), to type in by hand.")
    otpauth_uri: str = Field(description="The secret as an otpauth:// URI, what the QR code holds.")
    qr_svg: str = Field(description="A QR code of `otpauth_uri`, an SVG document for an <img>.")


class TotpConfirmation(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"code": "123456"}]})

    code: Code = Field(description="The authenticator app's current 6-digit code.")


class SecondFactorProof(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"current_password": "analytical-engine-1843", "code": "123456"},
                {
                    "current_password": "analytical-engine-1843",
                    "code": "abcd-efgh-ijkl-mnop-qrst-uvwx",
                },
            ]
        },
    )

    current_password: CurrentPassword = Field(json_schema_extra={"format": "password"})
    code: Code = Field(description="A code from the authenticator app, or an unused recovery code.")


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str] = Field(
        description="Ten single-use codes, shown only now: keep them somewhere safe."
    )


class OAuthErrorOut(BaseModel):
    """RFC 6749 §5.2 error response."""

    error: Literal[
        "invalid_request",
        "invalid_grant",
        "unsupported_grant_type",
        "invalid_client",
        "too_many_attempts",
    ]
    error_description: str


class JwkOut(BaseModel):
    """A public signing key as an RFC 7517 JWK: RSA keys have `n`/`e`, EC keys `crv`/`x`/`y`."""

    kty: Literal["RSA", "EC"]
    use: Literal["sig"]
    alg: Literal["RS256", "ES256"]
    kid: str = Field(description="RFC 7638 thumbprint of the key; access tokens name it in `kid`.")
    n: str | None = None
    e: str | None = None
    crv: str | None = None
    x: str | None = None
    y: str | None = None


class JwkSetOut(BaseModel):
    """RFC 7517 §5 JWK Set: the keys that verify Passgate's access tokens. Empty under HS256."""

    keys: list[JwkOut]


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class ErrorOut(BaseModel):
    detail: str


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    """A 422: which field is wrong and why. Submitted values are never echoed back."""

    detail: list[ValidationIssue]
