"""Reference app `hello_auth`: the `hello` route plus an HS256 JWT check, no database.

This is the token-check limit: what any FastAPI service that verifies a bearer JWT with
python-jose on every request can reach. The benchmark gives it the service's signing key
(BENCH_SECRET_KEY), so it accepts the very tokens the service issued.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import OAuth2PasswordBearer
from jose import jwt
from jose.exceptions import JWTError

SECRET_KEY = os.environ["BENCH_SECRET_KEY"]
bearer_scheme = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)

app = FastAPI()


async def get_claims(token: Annotated[str | None, Depends(bearer_scheme)]) -> dict[str, Any]:
    if not token:
        raise HTTPException(401, "Not authenticated", headers={"WWW-Authenticate": "Bearer"})
    try:
        return jwt.decode(token, SECRET_KEY, algorithms=["HS256"])
    except JWTError:
        raise HTTPException(
            401, "Not authenticated", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from None


@app.get("/users/me")
async def read_me(claims: Annotated[dict[str, Any], Depends(get_claims)]) -> dict[str, Any]:
    return {
        "id": claims["sub"],
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "is_active": True,
        "is_admin": False,
        "created_at": "2026-01-01T00:00:00Z",
    }
