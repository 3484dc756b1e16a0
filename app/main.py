"""The application: create_app(settings) wires settings, database, routers and error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from app.audit import configure_audit_log
from app.config import Settings, describe_validation_error, load_or_create_secret_key
from app.db import (
    PoolSettings,
    enable_wal,
    is_database_unavailable,
    make_engine,
    make_sessionmaker,
    sqlite_path,
    utcnow,
)
from app.docs import install_docs
from app.errors import OAuthError
from app.files import readable_by_others
from app.hash_pools import HashingUnavailable
from app.heap import freeze_startup_objects, unfreeze
from app.keys import KeyConfigError, TokenKeys, load_token_keys
from app.logs import configure_logging
from app.lookups import TokenUserLookup
from app.metrics import HttpMetricsMiddleware, mark_this_process_dead
from app.middleware import install_middleware
from app.migrate import upgrade_to_head
from app.openapi import operation_id
from app.pages import install_pages
from app.ratelimit import Throttle
from app.routers import (
    health,
    introspection,
    metrics,
    mfa,
    recovery,
    sessions,
    tokens,
    users,
    well_known,
)
from app.schemas import ValidationErrorOut
from app.security import AccessTokens, IntrospectionClients, Passwords, TotpSecretBox
from app.services.mail import Mailer
from app.services.tokens import purge_expired
from app.transactions import Transactions

logger = logging.getLogger("passgate")

try:
    VERSION = importlib.metadata.version("passgate")
except importlib.metadata.PackageNotFoundError:  # a checkout on sys.path, never installed
    VERSION = "0+unknown"

# What a 503 asks clients to wait: about as long as a database restart or failover takes.
RETRY_AFTER_SECONDS = 5

DESCRIPTION = """
Passgate is a self-hosted OAuth 2.0 authentication service: sign up, log in with the password
grant at `/token`, and call protected endpoints with `Authorization: Bearer <access token>`.

In this page: **Authorize** with your email as the username, then "Try it out" on any route.
"""


async def _purge_tokens_forever(app: FastAPI, interval_seconds: float) -> None:
    """Delete expired and ended logins on a schedule, so nobody has to remember to."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            async with app.state.sessionmaker() as session:
                removed = await purge_expired(session, now=utcnow())
            if removed:
                logger.info("token cleanup removed %d rows", removed)
        except (SQLAlchemyError, OSError) as exc:  # the database may be briefly away
            logger.warning("token cleanup failed, will retry: %s", exc)


async def _count_imported_hashes(app: FastAPI) -> None:
    try:
        await app.state.passwords.padding.recount(app.state.transactions)
    except (SQLAlchemyError, OSError) as exc:  # the database may be briefly away
        logger.warning("counting imported password hashes failed, will retry: %s", exc)


async def _count_imported_hashes_forever(app: FastAPI, interval_seconds: float) -> None:
    """Keep the count that decides whether failed logins wait (app/login_padding.py) current:
    rehashes in other replicas and imports made meanwhile are seen within the interval."""
    while True:
        await asyncio.sleep(interval_seconds)
        await _count_imported_hashes(app)


def describe_database(database_url: str) -> str:
    """The database's kind and where it is, never its user or password."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return f"sqlite {url.database or ':memory:'}"
    port = f":{url.port}" if url.port else ""
    return f"{url.get_backend_name()} {url.host or 'localhost'}{port}/{url.database or ''}"


# How each SMTP_TLS value protects the connection, in the operator's words.
_SMTP_TLS_WORDS = {"starttls": "STARTTLS", "tls": "implicit TLS", "none": "no TLS"}


def describe_mail(settings: Settings) -> str:
    """Where mail goes: the SMTP server and how it is reached, or the folder; no credential.

    Whether the service logs in is said, never as whom: the user name is half a credential.
    """
    if settings.smtp_host is None:
        return f"no SMTP_HOST: .eml files in {settings.outbox_dir.resolve()}"
    how = [_SMTP_TLS_WORDS[settings.smtp_tls], "login" if settings.smtp_username else "no login"]
    if settings.smtp_ca_file is not None and settings.smtp_tls != "none":
        how.append(f"CAs also from {settings.smtp_ca_file}")
    return f"SMTP {settings.smtp_host}:{settings.smtp_port} ({', '.join(how)})"


def log_startup(settings: Settings, keys: TokenKeys) -> None:
    """One line saying what runs, for the operator reading the log; nothing secret in it."""
    kids = [key.kid for key in keys.verifying if key.kid]
    fields = {
        "version": VERSION,
        "environment": settings.environment,
        "database": describe_database(settings.database_url),
        "algorithm": settings.jwt_algorithm,
        "signing_kid": keys.signing.kid,
        "verification_kids": ",".join(kids) if kids else None,
        "public_url": settings.public_url,
        "redis": "configured" if settings.redis_url else "not configured (per-process limits)",
        "mail": describe_mail(settings),
        "docs": f"{settings.public_url}/docs",
    }
    logger.info(
        "Passgate %s starting", VERSION, extra={"fields": fields, "in_message": ("version",)}
    )


def warn_if_database_exposed(database_url: str) -> None:
    """A warning at start when the SQLite files are open to other users of the machine."""
    database = sqlite_path(database_url)
    if database is None:
        return
    exposed = readable_by_others(Path(database))
    if exposed:
        names = ", ".join(str(path) for path in exposed)
        logger.warning(
            "The database holds every password hash and login, and other users of this machine "
            "can read it: %s. Run chmod 600 on the database files, and chmod 700 on their folder",
            names,
            extra={"fields": {"files": names}, "in_message": ("files",)},
        )


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if settings.migrate_on_start:
        await upgrade_to_head(
            settings.database_url, connect_timeout=settings.db_connect_timeout_seconds
        )
    elif (database := sqlite_path(settings.database_url)) is not None:
        # Migrated by `alembic upgrade head` (which set WAL) or by the process that started
        # this worker: normally a read that finds WAL set; a file that is not yet gets it here,
        # once, instead of in every connection as it opens.
        await asyncio.to_thread(enable_wal, database)
    warn_if_database_exposed(settings.database_url)
    app.state.engine = make_engine(settings.database_url, PoolSettings.from_settings(settings))
    app.state.sessionmaker = make_sessionmaker(app.state.engine)
    app.state.transactions = Transactions(app.state.engine, PoolSettings.from_settings(settings))
    app.state.token_user_lookup = TokenUserLookup(app.state.transactions)
    app.state.passwords = Passwords.from_settings(settings)
    app.state.token_keys = load_token_keys(settings)
    app.state.access_tokens = AccessTokens.from_settings(settings, app.state.token_keys)
    app.state.throttle = Throttle.from_settings(settings)
    app.state.introspection_clients = IntrospectionClients.from_settings(settings)
    app.state.totp_box = TotpSecretBox(_service_secret(settings))
    log_startup(settings, app.state.token_keys)
    app.state.mailer = Mailer(settings, app.state.transactions)
    app.state.mailer.start()
    cleanup = asyncio.create_task(
        _purge_tokens_forever(app, settings.token_cleanup_interval_seconds)
    )
    # Before the first request: a failed login waits only while imported hashes remain.
    await _count_imported_hashes(app)
    recount = asyncio.create_task(
        _count_imported_hashes_forever(app, settings.imported_hash_recount_seconds)
    )
    # After everything that can refuse to start: the hashing processes are ready to hash
    # before the first request, and none is left behind by a start-up that failed.
    await app.state.passwords.start()
    # Last: everything start-up built lives as long as the process (see app/heap.py).
    await freeze_startup_objects(app)
    try:
        yield
    finally:
        unfreeze()
        await app.state.mailer.stop()
        for task in (cleanup, recount):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await app.state.passwords.close()
        await app.state.throttle.close()
        await app.state.transactions.close()
        await app.state.engine.dispose()
        mark_this_process_dead()


def _service_secret(settings: Settings) -> str | None:
    """SECRET_KEY (or the development one on disk), from which TOTP secrets' key is derived.

    None only in production under RS256/ES256 without SECRET_KEY: enrolment is then refused.
    """
    try:
        return load_or_create_secret_key(settings)
    except RuntimeError:
        return None


async def _oauth_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OAuthError)
    # RFC 6749 §5.2: token endpoint errors are 400 with a JSON body, never cached.
    return JSONResponse(
        {"error": exc.error, "error_description": exc.description},
        status_code=exc.status_code,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache", **exc.headers},
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if not is_database_unavailable(exc):
        raise exc  # a bug, not an outage: let it be the 500 it is
    # Only the exception's type: its text can hold the statement and its parameters.
    logger.warning(
        "database unavailable during %s %s: %s%s",
        request.method,
        request.url.path,
        type(exc).__name__,
        f" ({type(exc.orig).__name__})" if isinstance(exc, DBAPIError) else "",
    )
    return _try_again_shortly()


async def _hashing_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # A hashing process died twice under one request, or none could start (app/hash_pools.py).
    logger.error("password hashing unavailable during %s %s", request.method, request.url.path)
    return _try_again_shortly()


def _try_again_shortly() -> JSONResponse:
    """The 503 of an outage the client can wait out: the database, or password hashing."""
    return JSONResponse(
        {"detail": "Service temporarily unavailable"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS), "Cache-Control": "no-store"},
    )


# The order the Allow header lists methods in.
_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def methods_of_path(app: FastAPI, scope: dict) -> list[str]:  # type: ignore[type-arg]
    """Every method some route answers at this request's path; HEAD wherever GET is.

    Starlette's 405 names only the methods of the first route with the path, so the page at
    GET /password-reset went missing from POST /password-reset's Allow (RFC 9110 §15.5.6: the
    target resource's methods, all of them).
    """
    # Asked of the router as a request would be, one method at a time: included routers
    # match lazily, and their prefixes apply. Mounts (static files, docs assets) answer every
    # method themselves and are left out.
    routes = [route for route in app.router.routes if not isinstance(route, Mount)]
    methods = [
        method
        for method in _METHOD_ORDER
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in routes)
    ]
    if "GET" in methods and "HEAD" not in methods:
        methods.insert(1, "HEAD")  # HeadAsGetMiddleware answers it for every GET route
    return methods


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        methods = methods_of_path(request.app, request.scope)
        if methods:
            headers = {**(exc.headers or {}), "Allow": ", ".join(methods)}
            exc = StarletteHTTPException(exc.status_code, exc.detail, headers=headers)
    return await http_exception_handler(request, exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # FastAPI's default body echoes the submitted input: for a signup, the password. This one
    # says which field is wrong and why, and nothing of what was sent.
    detail = [
        {
            "loc": list(error.get("loc", ())),
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        for error in exc.errors()
    ]
    return JSONResponse(
        ValidationErrorOut.model_validate({"detail": detail}).model_dump(),
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="Passgate",
        version=VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by app.docs from the service's own files, not a CDN
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.metrics_token_digest = (
        hashlib.sha256(settings.metrics_token.get_secret_value().encode()).digest()
        if settings.metrics_token is not None
        else None
    )
    # What "now" is for /token and the second factor; tests replace it to step through TOTP
    # time windows and past an mfa_token's lifetime without waiting.
    app.state.clock = utcnow
    app.add_exception_handler(OAuthError, _oauth_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # The database going away (restart, failover, full pool, stuck query) is a 503 that says
    # "try again shortly", not a 500 or a request that hangs.
    for exception_type in (DBAPIError, PoolTimeoutError, OSError, TimeoutError):
        app.add_exception_handler(exception_type, _database_unavailable)
    app.add_exception_handler(HashingUnavailable, _hashing_unavailable)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["Location", "Retry-After", "X-Request-ID"],
            max_age=600,
        )
    install_middleware(app, max_body_bytes=settings.max_body_bytes, access_log=settings.access_log)
    if settings.metrics_token is not None:
        # Outermost, so that every answer is counted and timed, a 413 or a 500 included.
        app.add_middleware(HttpMetricsMiddleware)
    configure_audit_log(settings.audit_log, settings.log_format)
    # FastAPI tries the routers in order, each of its routes in turn, and the router that
    # matches twice (to find it, then to call it): the busiest routes come first. /users/me
    # (every bearer call) and /signup lead users'; then /token, before 11 routes that took
    # a login about 20 us of CPU to pass, which its hash does not get (W3).
    app.include_router(users.router)
    app.include_router(tokens.router)
    app.include_router(sessions.router)
    app.include_router(mfa.router)
    app.include_router(introspection.router)
    app.include_router(well_known.router)
    app.include_router(recovery.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    install_docs(app)
    install_pages(app)
    return app


def _app_from_environment() -> FastAPI:
    """The application uvicorn serves, configured from the environment, or a one-line exit."""
    try:
        settings = Settings()
        configure_logging(settings.log_format, level=settings.log_level)
        if settings.jwt_algorithm != "HS256":
            # Checked here as well as in the lifespan: a failing lifespan prints a traceback,
            # and an operator with a weak or mismatched key deserves one line.
            load_token_keys(settings)
        return create_app(settings)
    except ValidationError as exc:
        sys.exit(f"passgate: invalid configuration: {describe_validation_error(exc)}")
    except KeyConfigError as exc:
        sys.exit(f"passgate: invalid configuration: {exc}")


app = _app_from_environment()
