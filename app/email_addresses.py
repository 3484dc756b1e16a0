"""One account per address: the one normalisation of an email address, used everywhere.

Two forms, computed the same way by signup, login, the login throttle, create-admin, password
reset and import (never a private `lower()` of one's own):

- `canonical_email(text)`: the address as we store and show it, email-validator's normalised
  form: NFC local part, IDNA/UTS-46 domain in Unicode and lower case, so `xn--bcher-kva.example`
  is stored as `bücher.example` and fullwidth letters in the domain become ASCII.
- `email_key(text)`: what decides "the same account": the canonical address under Unicode
  compatibility caseless matching (Unicode §3.13, D146: NFKD, case folding, NFKD, case
  folding), so `straße` and `STRASSE`, Greek `ΟΔΟΣ` with a final or a medial small sigma,
  and fullwidth letters (U+FF41...) and ASCII are one key each. `str.lower()` stopped at
  letter case: `ß` does not lower to `ss`, nor the final sigma (U+03C2) fold to U+03C3.

For SMTP there is a third, `smtp_address(text)`: the canonical address with its domain in
A-labels (`ada@xn--bcher-kva.example`) when the local part is ASCII, which any server takes;
with a local part beyond ASCII it stays in UTF-8, which only a server offering SMTPUTF8 (RFC
6531) takes. It is for the envelope and the To header only: stored addresses keep the
canonical form.

All three raise InvalidEmail (a ValueError, so Pydantic validators turn it into a 422) for anything
that is not an address. `lookup_key(text)` never raises: it is `email_key` for an address and,
for anything else, a key that no address has. Use it to find or compare (a login, a throttle
count, a stored address against another), so a string that is no address finds nobody; use
`email_key` (or the `Email` type of app/schemas.py) to store.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

# users.email_normalized is VARCHAR(320); case folding can lengthen an address (ß -> ss).
EMAIL_KEY_MAX_LENGTH = 320


class InvalidEmail(ValueError):
    """Not an email address we accept."""


def canonical_email(text: str) -> str:
    """The address as email-validator normalises it, without surrounding white space;
    InvalidEmail if it is not one."""
    return _validated(text.strip())[0]


# One request asks for the same address's forms several times (a login: the throttle's key,
# the lookup; a signup: the stored form, the key; then the sender: the mail's recipient), and
# email-validator takes about 50 us each time. Addresses that validate are remembered (a pure function of the
# text; those that do not raise, and are not kept). The memory is bounded: 2,048 addresses of
# at most a few hundred characters.
@lru_cache(maxsize=2048)
def _validated(text: str) -> tuple[str, str | None]:
    """The normalised address and its all-ASCII form (None if the local part is beyond it)."""
    try:
        # No DNS: signup must not depend on (or leak timing through) the resolver.
        validated = validate_email(text, check_deliverability=False)
    except (EmailNotValidError, UnicodeError) as exc:
        raise InvalidEmail(str(exc)) from None
    return validated.normalized, validated.ascii_email


def smtp_address(text: str) -> str:
    """The address as SMTP carries it: all ASCII (an A-label domain) if the local part is,
    else the canonical UTF-8 address, for SMTPUTF8 only; InvalidEmail if it is not one."""
    normalized, ascii_form = _validated(text.strip())
    return ascii_form or normalized


def needs_smtputf8(address: str) -> bool:
    """Whether an address (as `smtp_address` gives it) can travel only with SMTPUTF8."""
    return not address.isascii()


def caseless(text: str) -> str:
    """Unicode compatibility caseless form (D146), recomposed to NFC to keep keys short."""
    folded = unicodedata.normalize("NFD", text).casefold()
    folded = unicodedata.normalize("NFKD", folded).casefold()
    return unicodedata.normalize("NFC", unicodedata.normalize("NFKD", folded))


def email_key(text: str) -> str:
    """The key that makes one account per address; InvalidEmail if `text` is not an address."""
    key = caseless(canonical_email(text))
    if len(key) > EMAIL_KEY_MAX_LENGTH:
        raise InvalidEmail(f"must be at most {EMAIL_KEY_MAX_LENGTH} characters once case-folded")
    return key


# No address's key contains this prefix: the unquoted local parts email-validator accepts have
# no colon.
NOT_AN_ADDRESS = "not-an-address:"


def lookup_key(text: str) -> str:
    """`email_key(text)`, or for a string that is no address a key that no account can hold."""
    try:
        return email_key(text)
    except InvalidEmail:
        return NOT_AN_ADDRESS + caseless(text.strip())
