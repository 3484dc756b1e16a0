"""The second factor: TOTP enrolment and removal, recovery codes, and the MFA step at /token.

Every rule that must hold under concurrency is a conditional statement in one unit of work:

- a TOTP step is accepted only if it is later than the user's last accepted one
  (`UPDATE ... WHERE last_step < :step`), so a code works once, even under parallel requests,
  and the code that confirmed enrolment cannot log in afterwards;
- a recovery code is spent by `UPDATE ... WHERE used_at IS NULL`: once each;
- an mfa_token's try is taken (`attempts < 5`) in its own committed write before the code is
  checked, so 20 concurrent guesses get 5 tries between them, not 20;
- the session the second step opens is written in the transaction that spends the mfa_token
  and the code: all of it happens, or none.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from app.errors import DomainError, WrongPassword
from app.models import Account, MfaToken, RecoveryCode, TotpFactor, User
from app.security import (
    Passwords,
    SecondFactorUnavailable,
    TotpSecretBox,
    hash_opaque_token,
    hash_recovery_code,
    match_totp,
    new_mfa_token,
    new_recovery_codes,
    new_totp_secret,
)
from app.services import credentials
from app.services.tokens import PASSWORD_AND_OTP, PASSWORD_AND_RECOVERY_CODE, NewLogin
from app.transactions import Prepared, Statements, Transactions

PENDING_ENROLMENT = dt.timedelta(minutes=10)
MFA_TOKEN_LIFETIME = dt.timedelta(minutes=5)
MFA_TOKEN_MAX_ATTEMPTS = 5

Method = Literal["totp", "recovery_code"]


class AlreadyEnabled(DomainError):
    pass


class NothingPending(DomainError):
    pass


class NoSecondFactor(DomainError):
    pass


class WrongCode(DomainError):
    pass


class InvalidMfaToken(DomainError):
    """Unknown, expired, spent, or out of tries: one answer for all."""


class _Refused(Exception):
    """Raised inside a unit of work so that everything it wrote is rolled back."""


# Bind names differ from the columns': SQLAlchemy reserves those in INSERTs and UPDATEs.

CONFIRMED_FACTOR = Prepared(
    select(TotpFactor.secret_encrypted, TotpFactor.last_step).where(
        TotpFactor.user_id == bindparam("of_user"), TotpFactor.confirmed_at.is_not(None)
    )
)
FACTOR_STATE = Prepared(
    select(TotpFactor.secret_encrypted, TotpFactor.confirmed_at, TotpFactor.pending_until).where(
        TotpFactor.user_id == bindparam("of_user")
    )
)
STATUS = Prepared(
    select(
        select(func.count())
        .select_from(TotpFactor)
        .where(TotpFactor.user_id == bindparam("of_user"), TotpFactor.confirmed_at.is_not(None))
        .scalar_subquery()
        .label("enabled"),
        select(func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.user_id == bindparam("of_user"), RecoveryCode.used_at.is_(None))
        .scalar_subquery()
        .label("codes_left"),
    )
)
DELETE_PENDING = Prepared(
    delete(TotpFactor).where(
        TotpFactor.user_id == bindparam("of_user"), TotpFactor.confirmed_at.is_(None)
    )
)
INSERT_FACTOR = Prepared.insert(TotpFactor.__table__)
CONFIRM_FACTOR = Prepared(
    update(TotpFactor)
    .where(
        TotpFactor.user_id == bindparam("of_user"),
        TotpFactor.confirmed_at.is_(None),
        TotpFactor.pending_until > bindparam("now"),
        # The secret the code was checked against: a newer enrolment replaced it otherwise.
        TotpFactor.secret_encrypted == bindparam("sealed"),
    )
    .values(confirmed_at=bindparam("now"), pending_until=None, last_step=bindparam("step"))
)
# The replay guard: of any number of requests with codes of one step, one changes the row.
ACCEPT_STEP = Prepared(
    update(TotpFactor)
    .where(
        TotpFactor.user_id == bindparam("of_user"),
        TotpFactor.confirmed_at.is_not(None),
        or_(TotpFactor.last_step.is_(None), TotpFactor.last_step < bindparam("step")),
    )
    .values(last_step=bindparam("step"))
)
SPEND_RECOVERY_CODE = Prepared(
    update(RecoveryCode)
    .where(
        RecoveryCode.user_id == bindparam("of_user"),
        RecoveryCode.code_hash == bindparam("of_code_hash"),
        RecoveryCode.used_at.is_(None),
    )
    .values(used_at=bindparam("now"))
)
DELETE_RECOVERY_CODES = Prepared(
    delete(RecoveryCode).where(RecoveryCode.user_id == bindparam("of_user"))
)
INSERT_RECOVERY_CODE = Prepared(insert(RecoveryCode))
DELETE_FACTOR = Prepared(delete(TotpFactor).where(TotpFactor.user_id == bindparam("of_user")))
DELETE_MFA_TOKENS = Prepared(delete(MfaToken).where(MfaToken.user_id == bindparam("of_user")))
INSERT_MFA_TOKEN = Prepared.insert(MfaToken.__table__)
# Takes one try, before the code is checked, and says whose token it is.
TAKE_ATTEMPT = Prepared(
    update(MfaToken)
    .where(
        MfaToken.token_hash == bindparam("of_token_hash"),
        MfaToken.spent_at.is_(None),
        MfaToken.expires_at > bindparam("now"),
        MfaToken.attempts < MFA_TOKEN_MAX_ATTEMPTS,
    )
    .values(attempts=MfaToken.attempts + 1)
    .returning(MfaToken.id, MfaToken.user_id, MfaToken.credentials_version)
)
CHALLENGED_USER = Prepared(
    select(User.email_normalized, TotpFactor.secret_encrypted)
    .outerjoin(TotpFactor, (TotpFactor.user_id == User.id) & TotpFactor.confirmed_at.is_not(None))
    .where(User.id == bindparam("of_user"))
)
SPEND_MFA_TOKEN = Prepared(
    update(MfaToken)
    .where(
        MfaToken.id == bindparam("token_id"),
        MfaToken.spent_at.is_(None),
        MfaToken.expires_at > bindparam("now"),
    )
    .values(spent_at=bindparam("now"))
)


def _one(statements: Statements, prepared: Prepared, params: dict[str, object]) -> None:
    """Execute a conditional statement that must change exactly one row, or roll back."""
    if statements.execute(prepared, params).rowcount != 1:
        raise _Refused


def _insert_recovery_codes(
    statements: Statements, *, user_id: uuid.UUID, codes: list[str], now: dt.datetime
) -> None:
    statements.execute(DELETE_RECOVERY_CODES, {"of_user": user_id})
    for code in codes:
        statements.execute(
            INSERT_RECOVERY_CODE,
            {
                "id": uuid.uuid4(),
                "user_id": user_id,
                "code_hash": hash_recovery_code(code, user_id=user_id),
                "created_at": now,
                "used_at": None,
            },
        )


@dataclass(frozen=True, slots=True)
class MfaStatus:
    totp_enabled: bool
    recovery_codes_left: int


async def get_status(db: Transactions, *, user_id: uuid.UUID) -> MfaStatus:
    def read(statements: Statements) -> MfaStatus:
        row = statements.execute(STATUS, {"of_user": user_id}).rows[0]
        return MfaStatus(totp_enabled=bool(row.enabled), recovery_codes_left=int(row.codes_left))

    return await db.read(read)


async def begin_enrolment(
    db: Transactions,
    *,
    passwords: Passwords,
    box: TotpSecretBox,
    user: Account,
    current_password: str,
    now: dt.datetime,
) -> bytes:
    """A new pending TOTP secret (replacing any pending one); AlreadyEnabled, WrongPassword."""
    if not await passwords.verify(current_password, user.password_hash):
        raise WrongPassword
    secret = new_totp_secret()
    row = {
        "user_id": user.id,
        "secret_encrypted": box.encrypt(secret, user_id=user.id),
        "created_at": now,
        "pending_until": now + PENDING_ENROLMENT,
        "confirmed_at": None,
        "last_step": None,
    }

    def replace_pending(statements: Statements) -> None:
        statements.execute(DELETE_PENDING, {"of_user": user.id})
        statements.execute(INSERT_FACTOR, row)

    try:
        await db.write(replace_pending)
    except IntegrityError:
        # A confirmed factor holds the row (the primary key is the user's id).
        raise AlreadyEnabled from None
    return secret


async def confirm_enrolment(
    db: Transactions,
    *,
    box: TotpSecretBox,
    user_id: uuid.UUID,
    verified_version: int,
    code: str,
    current_session: uuid.UUID,
    now: dt.datetime,
) -> list[str]:
    """Turn the pending factor on with its first code; the user's other sessions end.

    Enrolment is a credential change (app/services/credentials.py): the stamp moves on, so a
    password login verified before it and still opening its session gets none. Returns the
    recovery codes, shown this once. NothingPending, WrongCode.
    """

    def read(statements: Statements) -> tuple[str, dt.datetime | None, dt.datetime | None] | None:
        return statements.execute(FACTOR_STATE, {"of_user": user_id}).one_or_none()

    state = await db.read(read)
    if state is None or state.confirmed_at is not None or state.pending_until <= now:
        raise NothingPending
    step = match_totp(box.decrypt(state.secret_encrypted, user_id=user_id), code, now=now)
    if step is None:
        raise WrongCode
    codes = new_recovery_codes()

    def confirm(statements: Statements) -> None:
        # Whoever else holds a session may be the reason for the second factor: they go.
        # The users row first, as every credential change does.
        if not credentials.change_credentials(
            statements,
            user_id=user_id,
            verified_version=verified_version,
            values={},
            now=now,
            keep_family=current_session,
        ):
            raise _Refused
        _one(
            statements,
            CONFIRM_FACTOR,
            {"of_user": user_id, "now": now, "sealed": state.secret_encrypted, "step": step},
        )
        _insert_recovery_codes(statements, user_id=user_id, codes=codes, now=now)

    try:
        await db.write(confirm)
    except _Refused:
        raise WrongCode from None  # confirmed or replaced meanwhile by another request
    return codes


def _looks_like_totp(code: str) -> bool:
    digits = "".join(code.split())
    return len(digits) == 6 and digits.isascii() and digits.isdigit()


def _spend_code(
    statements: Statements,
    *,
    user_id: uuid.UUID,
    step: int | None,
    code_hash: str | None,
    now: dt.datetime,
) -> None:
    """Inside a unit: accept the TOTP step, or spend the recovery code; else roll back."""
    if step is not None:
        _one(statements, ACCEPT_STEP, {"of_user": user_id, "step": step})
    else:
        _one(
            statements,
            SPEND_RECOVERY_CODE,
            {"of_user": user_id, "of_code_hash": code_hash, "now": now},
        )


async def _prove_second_factor(
    db: Transactions,
    *,
    passwords: Passwords,
    box: TotpSecretBox,
    user: Account,
    current_password: str,
    code: str,
    now: dt.datetime,
) -> tuple[int | None, str | None]:
    """Check password and code (a TOTP or a recovery code) for a change of the second factor.

    Returns what `_spend_code` spends in the change's own transaction. WrongPassword,
    NoSecondFactor, WrongCode.
    """
    if not await passwords.verify(current_password, user.password_hash):
        raise WrongPassword

    def read(statements: Statements) -> tuple[str, int | None] | None:
        return statements.execute(CONFIRMED_FACTOR, {"of_user": user.id}).one_or_none()

    factor = await db.read(read)
    if factor is None:
        raise NoSecondFactor
    if _looks_like_totp(code):
        try:
            secret = box.decrypt(factor.secret_encrypted, user_id=user.id)
        except SecondFactorUnavailable:
            raise WrongCode from None
        step = match_totp(secret, code, now=now)
        if step is None:
            raise WrongCode
        return step, None
    return None, hash_recovery_code(code, user_id=user.id)


async def remove_totp(
    db: Transactions,
    *,
    passwords: Passwords,
    box: TotpSecretBox,
    user: Account,
    current_password: str,
    code: str,
    now: dt.datetime,
) -> None:
    """Turn the second factor off, with the password and a code; its recovery codes go too."""
    step, code_hash = await _prove_second_factor(
        db,
        passwords=passwords,
        box=box,
        user=user,
        current_password=current_password,
        code=code,
        now=now,
    )

    def remove(statements: Statements) -> None:
        _spend_code(statements, user_id=user.id, step=step, code_hash=code_hash, now=now)
        _forget_second_factor(statements, user_id=user.id)

    try:
        await db.write(remove)
    except _Refused:
        raise WrongCode from None


async def regenerate_recovery_codes(
    db: Transactions,
    *,
    passwords: Passwords,
    box: TotpSecretBox,
    user: Account,
    current_password: str,
    code: str,
    now: dt.datetime,
) -> list[str]:
    """A new set of recovery codes; the old set stops working in the same transaction."""
    step, code_hash = await _prove_second_factor(
        db,
        passwords=passwords,
        box=box,
        user=user,
        current_password=current_password,
        code=code,
        now=now,
    )
    codes = new_recovery_codes()

    def regenerate(statements: Statements) -> None:
        _spend_code(statements, user_id=user.id, step=step, code_hash=code_hash, now=now)
        _insert_recovery_codes(statements, user_id=user.id, codes=codes, now=now)

    try:
        await db.write(regenerate)
    except _Refused:
        raise WrongCode from None
    return codes


def _forget_second_factor(statements: Statements, *, user_id: uuid.UUID) -> int:
    removed = statements.execute(DELETE_FACTOR, {"of_user": user_id}).rowcount
    statements.execute(DELETE_RECOVERY_CODES, {"of_user": user_id})
    # A second step in progress must not complete against a factor that is gone.
    statements.execute(DELETE_MFA_TOKENS, {"of_user": user_id})
    return removed


async def remove_by_admin(db: Transactions, *, user_id: uuid.UUID, now: dt.datetime) -> bool:
    """A lost device: the user's second factor goes and every session of the user ends.

    Returns whether the user had one (pending or enabled).
    """

    def remove(statements: Statements) -> bool:
        # A credential change: every session ends, and a login whose password step came
        # before (an mfa_token in flight, whatever it holds) opens none.
        credentials.change_credentials(
            statements, user_id=user_id, verified_version=None, values={}, now=now
        )
        return _forget_second_factor(statements, user_id=user_id) > 0

    return await db.write(remove)


async def issue_mfa_token(
    db: Transactions,
    *,
    user_id: uuid.UUID,
    verified_version: int,
    rehash: str | None,
    now: dt.datetime,
) -> str:
    """After the right password of a user with a second factor: the token of the second step.

    It carries the credentials version the password was verified at; `rehash` (a stronger
    hash of that password) is stored now, under the same condition as at any login.
    """
    token = new_mfa_token()
    row = {
        "id": uuid.uuid4(),
        "user_id": user_id,
        "token_hash": hash_opaque_token(token),
        "created_at": now,
        "expires_at": now + MFA_TOKEN_LIFETIME,
        "attempts": 0,
        "spent_at": None,
        "credentials_version": verified_version,
    }

    def store(statements: Statements) -> None:
        statements.execute(INSERT_MFA_TOKEN, row)
        if rehash is not None:
            credentials.store_rehash(
                statements, user_id=user_id, verified_version=verified_version, new_hash=rehash
            )

    await db.write(store)
    return token


@dataclass(frozen=True, slots=True)
class Challenge:
    """An mfa_token that had a try left, and that try, now taken."""

    token_id: uuid.UUID
    user_id: uuid.UUID
    email: str  # the account's normalized email: what the login throttle counts
    secret_encrypted: str | None  # None: the user has no TOTP factor (any more)
    verified_version: int  # the credentials version the password step verified


async def take_attempt(db: Transactions, *, presented: str, now: dt.datetime) -> Challenge:
    """Take one of the mfa_token's tries, committed before any code is looked at.

    InvalidMfaToken when the token is unknown, expired, spent or out of tries.
    """
    token_hash = hash_opaque_token(presented)

    def take(statements: Statements) -> Challenge | None:
        taken = statements.execute(TAKE_ATTEMPT, {"of_token_hash": token_hash, "now": now})
        row = taken.one_or_none()
        if row is None:
            return None
        user = statements.execute(CHALLENGED_USER, {"of_user": row.user_id}).one_or_none()
        if user is None:
            return None
        return Challenge(
            token_id=row.id,
            user_id=row.user_id,
            email=user.email_normalized,
            secret_encrypted=user.secret_encrypted,
            verified_version=row.credentials_version,
        )

    challenge = await db.write(take)
    if challenge is None:
        raise InvalidMfaToken
    return challenge


async def complete_login(
    db: Transactions,
    *,
    box: TotpSecretBox,
    challenge: Challenge,
    method: Method,
    code: str,
    login: NewLogin,
) -> None:
    """Check the code; on success spend it and the mfa_token, and open the session `login`.

    WrongCode for a wrong or replayed code, InvalidMfaToken when the token was spent meanwhile
    or the account can no longer log in.
    """
    user_id = challenge.user_id
    now = login.now
    step: int | None = None
    code_hash: str | None = None
    if method == "totp":
        if challenge.secret_encrypted is None:
            raise WrongCode
        try:
            secret = box.decrypt(challenge.secret_encrypted, user_id=user_id)
        except SecondFactorUnavailable:
            raise WrongCode from None
        step = match_totp(secret, code, now=now)
        if step is None:
            raise WrongCode
    else:
        code_hash = hash_recovery_code(code, user_id=user_id)

    def finish(statements: Statements) -> None:
        _one(statements, SPEND_MFA_TOKEN, {"token_id": challenge.token_id, "now": now})
        try:
            _spend_code(statements, user_id=user_id, step=step, code_hash=code_hash, now=now)
        except _Refused:
            raise _ReplayedCode from None
        # Conditional on the state the password step verified: a password change, a
        # deactivation or an admin's removal of the factor since then voids this login.
        if not login.open(statements, verified_version=challenge.verified_version):
            raise _Refused

    try:
        await db.write(finish)
    except _ReplayedCode:
        raise WrongCode from None
    except _Refused:
        # Spent by a parallel success, or the account changed (password, deactivation,
        # deletion, factor removed by an admin) since the password step.
        raise InvalidMfaToken from None


class _ReplayedCode(_Refused):
    pass


def amr_of(method: Method) -> tuple[str, ...]:
    return PASSWORD_AND_OTP if method == "totp" else PASSWORD_AND_RECOVERY_CODE
