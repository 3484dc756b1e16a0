"""Reference app `hello`: one FastAPI route returning a constant; the framework's own limit.

Served on the same uvicorn settings as the service, on the same path W1 asks for, so the
benchmark can drive it with the same script and compare requests per second directly.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

# About the size of a UserOut body, so the response costs the same to write.
CONSTANT_USER: dict[str, Any] = {
    "id": "0190d1f2-7c3a-7b4e-9c1d-2a3b4c5d6e7f",
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "is_active": True,
    "is_admin": False,
    "created_at": "2026-01-01T00:00:00Z",
}

app = FastAPI()


@app.get("/users/me")
async def read_me() -> dict[str, Any]:
    return CONSTANT_USER
