"""Settings: the only code that reads the environment or a `.env` file."""

from __future__ import annotations

import math
import os
import secrets
import ssl
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from app.email_addresses import InvalidEmail, smtp_address
from app.files import create_private_file, make_private_dir
from app.keygen import generate_secret

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/app.db"
# Where `make run` listens: outside production, links and metadata point there by default.
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
MIN_SECRET_BYTES = 32
# The entropy a production secret must show (see secret_entropy_bits). The bound leaves room
# under the 128 bits of a 16-byte random secret for the estimate's pessimism, and refuses what
# people make up: phrases of placeholder words, repeats and counters score 70 bits or less.
MIN_SECRET_BITS = 90
ZXCVBN_MAX_LENGTH = 72
# Words that secrets made up for this service are built from: zxcvbn counts them as one
# dictionary word each, not as characters.
SECRET_WORDS = (
    "passgate", "secret", "key", "signing", "production", "prod", "jwt", "token", "auth",
    "hs256", "changeme", "password", "super", "my", "your", "very", "long", "secure",
)  # fmt: skip
GENERATE_SECRET_COMMAND = "python -m app generate-secret"  # noqa: S105 - a command, not a secret
SECRET_KEY_FILENAME = "secret_key"  # noqa: S105 - a file name, not a secret

# Secrets that appear in tutorials, templates and .env examples. A production deployment
# started with one of these would accept tokens forged by anyone who read the same page.
PLACEHOLDER_SECRETS = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "changethis",
        "secret",
        "secret-key",
        "secret_key",
        "mysecret",
        "your-secret-key",
        "your_secret_key",
        "supersecret",
        "super-secret-key",
        "development",
        "dev",
        "test",
        "password",
        "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",  # FastAPI tutorial
    }
)


@dataclass(frozen=True, slots=True)
class IntrospectionClient:
    """A resource server allowed to call /introspect; `repr` never shows the secret."""

    client_id: str
    secret: SecretStr

    @classmethod
    def parse_all(cls, value: str) -> tuple[IntrospectionClient, ...]:
        clients: list[IntrospectionClient] = []
        for pair in (item.strip() for item in value.split(",")):
            if not pair:
                continue
            client_id, colon, secret = pair.partition(":")
            client_id, secret = client_id.strip(), secret.strip()
            # RFC 7617 §2: a Basic user-id cannot hold a colon, so the first one separates.
            if not colon or not client_id or not secret:
                raise ValueError("must be id:secret pairs separated by commas")
            if any(not character.isprintable() for character in pair):
                raise ValueError("must not contain control characters")
            if any(client.client_id == client_id for client in clients):
                raise ValueError(f"names the client {client_id!r} twice")
            clients.append(cls(client_id, SecretStr(secret)))
        return tuple(clients)


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the platform has one (Linux)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Settings(BaseSettings):
    """Everything the service can be told from outside. Field names are the variables, lower-cased."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    secret_key: SecretStr | None = None
    environment: Literal["development", "production", "test"] = "development"
    # The name people see on the account pages (and in mail): the operator's, not ours.
    product_name: str = "Passgate"

    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 1_209_600
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = "HS256"
    # PEM private key that signs tokens under RS256/ES256 (`python -m app generate-key`).
    jwt_private_key_file: Path | None = None
    # PEM files (public or private keys) that verify tokens but never sign: the previous key
    # after a rotation, or the next one published ahead of it. Comma-separated.
    jwt_verify_key_files: Annotated[list[Path], NoDecode] = []
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    # How long other services may cache GET /.well-known/jwks.json.
    jwks_max_age_seconds: int = 300

    # Connections each process keeps to PostgreSQL, and how many more it may open under load.
    # Every replica and worker has its own pool: keep replicas x workers x (size + overflow)
    # below the server's max_connections.
    db_pool_size: int = 5
    db_max_overflow: int = 10
    # Seconds a request waits for a free connection before failing (503) instead of queueing.
    db_pool_timeout_seconds: float = 10.0
    # Connections older than this are replaced, so none outlives a firewall's idle cut-off.
    db_pool_recycle_seconds: int = 1800
    # PostgreSQL cancels any statement running longer than this, so a stuck query cannot hold
    # a connection and a worker forever. 0 turns the limit off.
    db_statement_timeout_ms: int = 10_000
    # Seconds to wait for a new connection to the database.
    db_connect_timeout_seconds: float = 5.0

    # The service's address as users and other services reach it (scheme, host, optional port
    # and path prefix): the base of every link in mail and of the metadata document. Never
    # taken from a request's Host or X-Forwarded-* headers, which a client chooses.
    # Unset outside production means DEFAULT_PUBLIC_URL; production requires it.
    public_url: str = ""

    migrate_on_start: bool = True
    cors_origins: Annotated[list[str], NoDecode] = []

    # Argon2id cost. The defaults are OWASP's minimum (19 MiB, 2 passes, 1 lane); tests lower
    # them, and operators may raise them. Stored hashes with other parameters are upgraded at
    # the next successful login.
    password_hash_memory_kib: int = 19_456
    password_hash_time_cost: int = 2
    password_hash_parallelism: int = 1
    # How many password hashes run at once (hashing processes, or threads). Each hash takes
    # one core for its whole duration, so more than the cores only queues work in the kernel
    # instead of in the service. The cores this process may run on, not the machine's: a
    # container or a service pinned with taskset or cpusets gets as many as it has cores.
    password_hash_threads: int = max(1, usable_cores())
    # Where hashes run (app/hash_pools.py): "processes", a few hashing processes at the lowest
    # CPU priority, so that a login storm leaves every other request alone; "threads", threads
    # of the service's own process, which start at once and share its GIL (the tests' choice).
    password_hash_pool: Literal["processes", "threads"] = "processes"  # noqa: S105 - not a secret
    # While imported hashes remain, a failed login waits as long as the slowest recent
    # imported verification, at most this long (app/login_padding.py); 0 turns the wait off.
    imported_hash_padding_max_seconds: float = 1.0
    # How often imported hashes are counted again (another replica's rehashes, a new import).
    imported_hash_recount_seconds: float = 60.0

    # How often expired and spent refresh tokens are deleted.
    token_cleanup_interval_seconds: float = 3600.0

    # Abuse protection (app/ratelimit.py, app/middleware.py, app/audit.py). Each limit is one
    # rate in the `limits` library's notation: "10/minute", "30 per 5 minutes".
    login_rate_limit: str = "10/minute"
    signup_rate_limit: str = "30 per 5 minutes"
    # Shared rate-limit counters; unset means each process counts on its own.
    redis_url: str | None = None
    # Prefix of every Redis key, so several deployments can share one Redis.
    redis_key_prefix: str = "passgate"
    max_body_bytes: int = 64 * 1024
    # Where audit events go (in the format of every other line, LOG_FORMAT).
    audit_log: Literal["stdout", "stderr", "off"] = "stdout"
    # Every line the service prints: human-readable text, or one JSON object per line.
    log_format: Literal["text", "json"] = "text"
    # The least severe lines written: `warning` leaves out the access log and start-up lines.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # One line per request (method, path without its query string, status, duration, request
    # id); off for benchmarks.
    access_log: bool = True

    # Resource servers allowed to call POST /introspect: `id:secret` pairs, comma-separated
    # (HTTP Basic, RFC 7662 §2.1). Empty: nobody can introspect.
    introspection_clients: Annotated[tuple[IntrospectionClient, ...], NoDecode] = ()
    # Turns GET /metrics on, for scrapers sending it as a bearer token; unset: /metrics is 404.
    metrics_token: SecretStr | None = None

    # Mail (app/services/mail.py). Without smtp_host, mail is written as .eml files to
    # mail_outbox_dir instead of being sent. The product name in mail is product_name's.
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["starttls", "tls", "none"] = "starttls"
    # PEM certificates of CAs to trust for the mail server's certificate, besides the system's:
    # a private CA, or a self-signed server's own certificate. The certificate and the host name
    # are verified whatever this says; there is no setting that turns verification off.
    smtp_ca_file: Path | None = None
    # Seconds to open the connection (TLS handshake included), and to wait for each reply.
    smtp_connect_timeout_seconds: float = 10.0
    smtp_timeout_seconds: float = 30.0
    mail_from: str = "Passgate <no-reply@localhost>"
    mail_outbox_dir: Path | None = None
    # A failed delivery is retried after mail_retry_base_seconds, then twice as long each time
    # up to mail_retry_max_interval_seconds, until mail_retry_for_seconds after the mail was
    # queued; then it is recorded as failed.
    mail_retry_base_seconds: float = 30.0
    mail_retry_max_interval_seconds: float = 1800.0
    mail_retry_for_seconds: float = 172_800.0
    # How often each process looks for mail queued by the others (its own wakes it at once).
    mail_poll_interval_seconds: float = 5.0
    # How long a process holds a mail it took for sending before another may take it: a
    # process killed mid-send delays that mail by this much. Longer than a whole SMTP exchange.
    mail_claim_seconds: float = 120.0

    require_email_verification: bool = False
    password_reset_ttl_seconds: int = 1800
    email_verification_ttl_seconds: int = 86_400
    password_reset_url: str | None = None
    email_verification_url: str | None = None
    # Reset and verification requests per client address (429 beyond), and the quiet period
    # per address and purpose during which a new request sends nothing (still 202).
    recovery_rate_limit: str = "5 per 15 minutes"
    recovery_cooldown_seconds: int = 60

    @field_validator("cors_origins", "jwt_verify_key_files", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("introspection_clients", mode="before")
    @classmethod
    def _parse_clients(cls, value: object) -> object:
        return IntrospectionClient.parse_all(value) if isinstance(value, str) else value

    @field_validator("login_rate_limit", "signup_rate_limit", "recovery_rate_limit")
    @classmethod
    def _one_rate_limit(cls, value: str) -> str:
        try:
            count = len(parse_many(value))
        except ValueError:
            count = 0
        if count != 1:
            raise ValueError('must be one rate, such as "10/minute" or "30 per 5 minutes"')
        return value

    @field_validator("product_name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        # It lands in page titles and mail headers: one line of printable text.
        if not value.strip() or len(value) > 100 or not value.isprintable():
            raise ValueError("must be 1 to 100 printable characters on one line")
        return value.strip()

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("database_url")
    @classmethod
    def _async_database_url(cls, value: str) -> str:
        # Checked here, not when the engine is made: a sync or unknown driver otherwise ends
        # in an import error deep in SQLAlchemy ("No module named 'psycopg2'"). The URL itself
        # is never echoed: it may hold a password.
        try:
            drivername = make_url(value).drivername
        except ArgumentError:
            raise ValueError(
                "is not a database URL; write sqlite+aiosqlite:///./data/app.db or "
                "postgresql+asyncpg://user:password@host:5432/database"
            ) from None
        backend, _, driver = drivername.partition("+")
        if backend == "sqlite" and driver != "aiosqlite":
            raise ValueError(
                f"{drivername}:// is not an async driver; write sqlite+aiosqlite:// instead"
            )
        if backend in ("postgresql", "postgres") and driver != "asyncpg":
            raise ValueError(
                f"{drivername}:// is not an async driver; write postgresql+asyncpg:// instead"
            )
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(
                f"{drivername}:// is not supported; Passgate runs on SQLite "
                "(sqlite+aiosqlite://) or PostgreSQL (postgresql+asyncpg://)"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        return normalize_public_url(value) if value.strip() else ""

    @field_validator("password_reset_url", "email_verification_url")
    @classmethod
    def _page_url(cls, value: str | None) -> str | None:
        return normalize_public_url(value) if value else None

    @field_validator(
        "smtp_connect_timeout_seconds",
        "smtp_timeout_seconds",
        "mail_retry_base_seconds",
        "mail_retry_max_interval_seconds",
        "mail_poll_interval_seconds",
        "mail_claim_seconds",
        "imported_hash_recount_seconds",
    )
    @classmethod
    def _positive_seconds(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be a positive number of seconds")
        return value

    @field_validator("imported_hash_padding_max_seconds")
    @classmethod
    def _padding_ceiling(cls, value: float) -> float:
        if not 0 <= value <= 60:
            raise ValueError("must be between 0 and 60 seconds")
        return value

    @field_validator("mail_retry_for_seconds")
    @classmethod
    def _retry_a_day(cls, value: float) -> float:
        # API.md: a mail server that is down for a day delays mail, it does not lose it.
        if value < 86_400:
            raise ValueError("must be at least 86400 (a day)")
        return value

    @field_validator("smtp_ca_file")
    @classmethod
    def _ca_certificates(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        try:
            ssl.create_default_context().load_verify_locations(cafile=value)
        except ssl.SSLError:
            raise ValueError(f"{value} holds no PEM certificate") from None
        except OSError as exc:  # a missing or unreadable file
            raise ValueError(f"cannot read {value} ({exc.strerror})") from None
        return value

    @field_validator("mail_from")
    @classmethod
    def _one_address(cls, value: str) -> str:
        _name, address = parseaddr(value)
        if "@" not in address or any(char in value for char in "\r\n"):
            raise ValueError('must be one address, such as "Passgate <no-reply@example.com>"')
        local_part, _, domain = address.rpartition("@")
        # Every mail carries this address: with a local part beyond ASCII each one could leave
        # only through a server offering SMTPUTF8 and reach only recipients whose servers do
        # too (RFC 6531). Refused here, once, rather than found out mail by mail.
        if not local_part.isascii():
            raise ValueError(
                "must have an ASCII part before the @ (the display name and the domain may be "
                "beyond ASCII): most mail servers cannot carry a sender address such as this"
            )
        if not domain.isascii():  # sent in A-labels (xn--), so it must be a valid domain
            try:
                smtp_address(address)
            except InvalidEmail as exc:
                raise ValueError(f"must be one valid address: {exc}") from None
        return value

    @model_validator(mode="after")
    def _public_url_default(self) -> Settings:
        if self.public_url:
            return self
        # A production link pointing at 127.0.0.1 would send every user's browser nowhere.
        if self.environment == "production":
            raise ValueError("PUBLIC_URL is required when ENVIRONMENT=production")
        # frozen=True: the default is filled in the one way a frozen model allows.
        object.__setattr__(self, "public_url", DEFAULT_PUBLIC_URL)
        return self

    @field_validator("max_body_bytes")
    @classmethod
    def _positive_size(cls, value: int) -> int:
        if value < 1024:
            raise ValueError("must be at least 1024 bytes")
        return value

    @field_validator(
        "jwt_issuer",
        "jwt_audience",
        "secret_key",
        "jwt_private_key_file",
        "redis_url",
        "metrics_token",
        "smtp_host",
        "smtp_username",
        "smtp_password",
        "smtp_ca_file",
        "mail_outbox_dir",
        "password_reset_url",
        "email_verification_url",
        mode="before",
    )
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator(
        "access_token_ttl_seconds",
        "refresh_token_ttl_seconds",
        "password_reset_ttl_seconds",
        "email_verification_ttl_seconds",
    )
    @classmethod
    def _positive_ttl(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be a positive number of seconds")
        return value

    @field_validator(
        "jwks_max_age_seconds",
        "db_pool_recycle_seconds",
        "db_max_overflow",
        "recovery_cooldown_seconds",
    )
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must not be negative")
        return value

    @field_validator("db_statement_timeout_ms")
    @classmethod
    def _sane_statement_timeout(cls, value: int) -> int:
        if value != 0 and value < 100:
            raise ValueError("must be 0 (no limit) or at least 100 milliseconds")
        return value

    @field_validator("db_pool_size", "db_pool_timeout_seconds", "db_connect_timeout_seconds")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @model_validator(mode="after")
    def _key_files_match_algorithm(self) -> Settings:
        if self.jwt_algorithm == "HS256":
            if self.jwt_private_key_file is not None or self.jwt_verify_key_files:
                raise ValueError(
                    "JWT_PRIVATE_KEY_FILE and JWT_VERIFY_KEY_FILES need JWT_ALGORITHM=RS256/ES256"
                )
        elif self.jwt_private_key_file is None:
            raise ValueError(
                f"JWT_PRIVATE_KEY_FILE is required when JWT_ALGORITHM={self.jwt_algorithm}"
            )
        return self

    @field_validator("password_hash_threads")
    @classmethod
    def _at_least_one_thread(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @model_validator(mode="after")
    def _refuse_weak_secret_in_production(self) -> Settings:
        if self.environment != "production":
            return self
        if self.secret_key is None:
            # Under RS256/ES256 the private key file signs tokens instead.
            if self.jwt_algorithm != "HS256":
                return self
            raise ValueError(
                "SECRET_KEY is required when ENVIRONMENT=production; "
                f"generate one with: {GENERATE_SECRET_COMMAND}"
            )
        problem = secret_key_problem(self.secret_key.get_secret_value())
        if problem:
            raise ValueError(f"SECRET_KEY {problem}")
        return self

    @model_validator(mode="after")
    def _refuse_weak_client_secrets_in_production(self) -> Settings:
        # A guessable introspection secret lets anyone test stolen tokens against us.
        if self.environment != "production":
            return self
        for client in self.introspection_clients:
            problem = secret_key_problem(client.secret.get_secret_value())
            if problem:
                raise ValueError(
                    f"INTROSPECTION_CLIENTS: the secret of {client.client_id!r} {problem}"
                )
        return self

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.database_url).get_backend_name() == "sqlite"

    @property
    def outbox_dir(self) -> Path:
        """Where mail goes without SMTP_HOST."""
        return self.mail_outbox_dir or self.data_dir / "outbox"

    @property
    def data_dir(self) -> Path:
        """The SQLite database's folder, or ./data for other databases."""
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return Path(url.database).parent
        return Path("data")


def normalize_public_url(value: str) -> str:
    """An http(s) URL with a host and no query or fragment, without a trailing slash."""
    value = value.strip()
    example = "must be an http:// or https:// URL such as https://auth.example.com"
    try:
        parts = urlsplit(value)
        has_port = parts.port is not None  # raises for a port that is not a number in range
    except ValueError:
        raise ValueError(example) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or (has_port and not parts.port):
        raise ValueError(example)
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError("must not have a query or a fragment")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not hold a user name or password")
    if any(character.isspace() or ord(character) < 0x20 for character in value):
        raise ValueError("must not contain whitespace or control characters")
    return value.rstrip("/")


def describe_validation_error(exc: ValidationError) -> str:
    """Pydantic's errors as one line naming each variable: `SECRET_KEY: must be ...; ...`."""
    problems = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]).upper()
        # A validator's ValueError arrives as "Value error, <our message>": the prefix says
        # nothing to an operator. Model-level checks have no loc; their message names the
        # variable itself.
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if name else message)
    return "; ".join(problems)


def secret_key_problem(secret: str) -> str | None:
    """What makes a signing secret unfit for production, or None when it is fine."""
    advice = f"generate one with: {GENERATE_SECRET_COMMAND}"
    if secret.strip().lower() in PLACEHOLDER_SECRETS:
        return f"is a well-known placeholder; {advice}"
    if len(secret.encode()) < MIN_SECRET_BYTES:
        return f"must be at least {MIN_SECRET_BYTES} bytes long; {advice}"
    bits = secret_entropy_bits(secret)
    if bits < MIN_SECRET_BITS:
        return (
            f"is too easy to guess (about {bits:.0f} bits of entropy, at least "
            f"{MIN_SECRET_BITS} needed); {advice}"
        )
    return None


def secret_entropy_bits(secret: str) -> float:
    """A low estimate of the secret's entropy in bits: the lesser of two estimates.

    zxcvbn's guess count finds what people build secrets from (repeats, sequences, keyboard
    walks, dictionary words, placeholders such as `changeme` repeated to length); it counts a
    character it cannot explain as 10 guesses, so 32 random hex characters (128 bits) score
    about 96 bits or more. The alphabet estimate, length times log2 of the distinct characters
    used, bounds what text over a small alphabet can hold (`0110...` random-looking to zxcvbn).
    """
    # Imported here: its word lists take a moment to load, and only production needs them.
    from zxcvbn import zxcvbn

    # zxcvbn refuses more than 72 characters, and its matching grows fast with length: the
    # first 72 characters of a good secret are a good secret.
    head = secret[:ZXCVBN_MAX_LENGTH]
    guessed = zxcvbn(head, user_inputs=list(SECRET_WORDS))["guesses_log10"] * math.log2(10)
    alphabet = len(secret) * math.log2(len(set(secret))) if len(set(secret)) > 1 else 0.0
    return min(guessed, alphabet)


def load_or_create_secret_key(settings: Settings) -> str:
    """The configured signing secret, or outside production one generated once and kept on disk.

    The file sits beside the SQLite database with mode 0600, so tokens survive a restart and
    several workers starting together agree on one secret (O_EXCL: the first writer wins).
    """
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    if settings.environment == "production":  # unreachable: the validator refuses it
        raise RuntimeError("SECRET_KEY is required when ENVIRONMENT=production")
    path = settings.data_dir / SECRET_KEY_FILENAME
    make_private_dir(path.parent)
    if not path.exists():
        # Written under a private name, then linked into place: link() fails if another
        # worker got there first, and nobody ever reads a half-written file.
        draft = path.with_name(f".{SECRET_KEY_FILENAME}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = create_private_file(draft)
        if fd is None:  # a name made of our pid and 32 random bits: nobody else's
            raise RuntimeError(f"{draft} exists; remove it")
        with os.fdopen(fd, "w") as file:
            file.write(generate_secret() + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    secret = path.read_text().strip()
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise RuntimeError(f"{path} holds no usable secret; delete it or set SECRET_KEY")
    return secret
