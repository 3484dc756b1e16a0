"""The application: create_app(settings) wires settings, database, routers and error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings, load_or_create_secret_key
from app.db import make_engine, make_sessionmaker, utcnow
from app.docs import install_docs
from app.errors import OAuthError
from app.migrate import upgrade_to_head
from app.openapi import operation_id
from app.routers import health, tokens, users
from app.schemas import ValidationErrorOut
from app.security import AccessTokens, Passwords
from app.services.tokens import purge_expired

logger = logging.getLogger("passgate")

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


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if settings.migrate_on_start:
        await upgrade_to_head(settings.database_url)
    app.state.engine = make_engine(settings.database_url)
    app.state.sessionmaker = make_sessionmaker(app.state.engine)
    app.state.passwords = Passwords.from_settings(settings)
    app.state.access_tokens = AccessTokens(
        secret=load_or_create_secret_key(settings),
        algorithm=settings.jwt_algorithm,
        ttl_seconds=settings.access_token_ttl_seconds,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    cleanup = asyncio.create_task(
        _purge_tokens_forever(app, settings.token_cleanup_interval_seconds)
    )
    try:
        yield
    finally:
        cleanup.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cleanup
        app.state.passwords.close()
        await app.state.engine.dispose()


async def _oauth_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OAuthError)
    # RFC 6749 §5.2: token endpoint errors are 400 with a JSON body, never cached.
    return JSONResponse(
        {"error": exc.error, "error_description": exc.description},
        status_code=status.HTTP_400_BAD_REQUEST,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


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
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by app.docs from the service's own files, not a CDN
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.add_exception_handler(OAuthError, _oauth_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    app.include_router(users.router)
    app.include_router(tokens.router)
    app.include_router(health.router)
    install_docs(app)
    return app


def _app_from_environment() -> FastAPI:
    try:
        return create_app(Settings())
    except ValidationError as exc:
        # One line naming the variable, instead of a traceback, when the service can't start.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']).upper() or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        sys.exit(f"passgate: invalid configuration: {problems}")


app = _app_from_environment()
