"""Many clients over every endpoint at once: any 5xx or dropped connection is a failure.

Each client owns an account and walks through what real clients do, in random order: reads,
logins right and wrong, refreshes (and a replayed refresh token now and then), revocation,
logout, password changes, account deletion, malformed input; one client is an admin that
renames, deactivates, reactivates and deletes other accounts meanwhile. Answers other than
5xx are expected whatever they are (an account an admin just deleted answers 401), and only
counted.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

PASSWORD = "mix-password-8d1e"


@dataclass
class MixReport:
    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_endpoint: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)


@dataclass
class Account:
    email: str = ""
    password: str = PASSWORD
    user_id: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    spent_refresh_token: str | None = None
    cursor: str | None = None


class Client:
    def __init__(
        self,
        http: httpx.AsyncClient,
        report: MixReport,
        known_ids: list[str],
        rng: random.Random,
    ) -> None:
        self.http = http
        self.report = report
        self.known_ids = known_ids
        self.rng = rng
        self.account = Account()

    async def call(
        self, label: str, method: str, url: str, **kwargs: object
    ) -> httpx.Response | None:
        self.report.requests += 1
        self.report.by_endpoint[label] += 1
        try:
            response = await self.http.request(method, url, **kwargs)  # type: ignore[arg-type]  # httpx's keyword types
        except httpx.TransportError as exc:
            self.report.transport_errors.append(f"{label}: {type(exc).__name__}")
            return None
        self.report.by_status[response.status_code] += 1
        if response.status_code >= 500:
            self.report.server_errors.append(
                f"{label} {response.status_code}: {response.text[:200]}"
            )
        return response

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.account.access_token}"}

    async def sign_up(self) -> None:
        self.account = Account(email=f"mix-{uuid.uuid4().hex[:12]}@example.com")
        response = await self.call(
            "POST /signup",
            "POST",
            "/signup",
            json={"name": "Mix User", "email": self.account.email, "password": PASSWORD},
        )
        if response is not None and response.status_code == 201:
            self.account.user_id = response.json()["id"]
            self.known_ids.append(self.account.user_id)

    async def log_in(self) -> None:
        response = await self.call(
            "POST /token password",
            "POST",
            "/token",
            data={
                "grant_type": "password",
                "username": self.account.email,
                "password": self.account.password,
            },
        )
        if response is None:
            return
        if response.status_code == 200:
            body = response.json()
            self.account.access_token = body["access_token"]
            self.account.refresh_token = body["refresh_token"]
        elif response.status_code == 400:
            # Deleted or deactivated by the admin meanwhile: start over with a new account.
            await self.sign_up()

    async def ensure_logged_in(self) -> None:
        if self.account.user_id is None:
            await self.sign_up()
        if self.account.access_token is None:
            await self.log_in()

    def forget_tokens(self) -> None:
        self.account.access_token = None
        self.account.refresh_token = None

    async def after_bearer_call(self, response: httpx.Response | None) -> None:
        if response is not None and response.status_code == 401:
            self.forget_tokens()

    # --- actions -----------------------------------------------------------------------------

    async def read_me(self) -> None:
        await self.after_bearer_call(
            await self.call("GET /users/me", "GET", "/users/me", headers=self.bearer())
        )

    async def list_users(self) -> None:
        params: dict[str, object] = {"limit": self.rng.randint(1, 100)}
        if self.account.cursor and self.rng.random() < 0.7:
            params["cursor"] = self.account.cursor
        response = await self.call(
            "GET /users", "GET", "/users", params=params, headers=self.bearer()
        )
        if response is not None and response.status_code == 200:
            self.account.cursor = response.json()["next_cursor"]
        await self.after_bearer_call(response)

    async def read_user(self) -> None:
        target = self.rng.choice(self.known_ids) if self.known_ids else str(uuid.uuid4())
        await self.after_bearer_call(
            await self.call("GET /users/{id}", "GET", f"/users/{target}", headers=self.bearer())
        )

    async def wrong_password(self) -> None:
        await self.call(
            "POST /token wrong password",
            "POST",
            "/token",
            data={
                "grant_type": "password",
                "username": self.account.email,
                "password": "nope-nope-1",
            },
        )

    async def refresh(self) -> None:
        if self.account.refresh_token is None:
            return
        presented = self.account.refresh_token
        response = await self.call(
            "POST /token refresh",
            "POST",
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": presented},
        )
        if response is not None and response.status_code == 200:
            body = response.json()
            self.account.access_token = body["access_token"]
            self.account.refresh_token = body["refresh_token"]
            self.account.spent_refresh_token = presented
        else:
            self.forget_tokens()

    async def replay_refresh(self) -> None:
        if self.account.spent_refresh_token is None:
            return
        await self.call(
            "POST /token reused refresh",
            "POST",
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": self.account.spent_refresh_token},
        )
        self.account.spent_refresh_token = None
        self.forget_tokens()  # reuse detection ended the login

    async def revoke(self) -> None:
        if self.account.refresh_token is None:
            return
        await self.call(
            "POST /revoke", "POST", "/revoke", data={"token": self.account.refresh_token}
        )
        self.forget_tokens()

    async def logout(self) -> None:
        await self.call("POST /logout", "POST", "/logout", headers=self.bearer())
        self.forget_tokens()

    async def change_password(self) -> None:
        new_password = f"mix-{uuid.uuid4().hex[:10]}"
        response = await self.call(
            "POST /users/me/password",
            "POST",
            "/users/me/password",
            json={"current_password": self.account.password, "new_password": new_password},
            headers=self.bearer(),
        )
        if response is not None and response.status_code == 204:
            self.account.password = new_password
        self.forget_tokens()

    async def delete_me(self) -> None:
        await self.call("DELETE /users/me", "DELETE", "/users/me", headers=self.bearer())
        self.account = Account()

    async def malformed(self) -> None:
        choice = self.rng.randrange(4)
        if choice == 0:
            await self.call("POST /signup bad", "POST", "/signup", json={"name": "", "email": "x"})
        elif choice == 1:
            await self.call(
                "GET /users/me bad token",
                "GET",
                "/users/me",
                headers={"Authorization": "Bearer x.y.z"},
            )
        elif choice == 2:
            await self.call(
                "GET /users bad cursor",
                "GET",
                "/users",
                params={"cursor": "!!"},
                headers=self.bearer(),
            )
        else:
            await self.call("POST /token bad grant", "POST", "/token", data={"grant_type": "magic"})

    async def health(self) -> None:
        await self.call("GET /health/ready", "GET", "/health/ready")

    async def admin_action(self) -> None:
        others = [user_id for user_id in self.known_ids if user_id != self.account.user_id]
        if not others:
            return
        target = self.rng.choice(others)
        choice = self.rng.randrange(4)
        if choice == 0:
            await self.call(
                "PATCH /users/{id}",
                "PATCH",
                f"/users/{target}",
                json={"name": "Renamed"},
                headers=self.bearer(),
            )
        elif choice == 1:
            await self.call(
                "PATCH /users/{id}",
                "PATCH",
                f"/users/{target}",
                json={"is_active": False},
                headers=self.bearer(),
            )
            await self.call(
                "PATCH /users/{id}",
                "PATCH",
                f"/users/{target}",
                json={"is_active": True},
                headers=self.bearer(),
            )
        elif choice == 2:
            await self.call(
                "DELETE /users/{id}", "DELETE", f"/users/{target}", headers=self.bearer()
            )
        else:
            await self.read_user()


WEIGHTED_ACTIONS = [
    ("read_me", 30),
    ("list_users", 12),
    ("read_user", 10),
    ("refresh", 10),
    ("wrong_password", 4),
    ("replay_refresh", 2),
    ("revoke", 2),
    ("logout", 2),
    ("change_password", 2),
    ("delete_me", 1),
    ("malformed", 4),
    ("health", 2),
]


async def run_client(client: Client, deadline: float, is_admin: bool) -> None:
    names = [name for name, _ in WEIGHTED_ACTIONS]
    weights = [weight for _, weight in WEIGHTED_ACTIONS]
    while time.monotonic() < deadline:
        await client.ensure_logged_in()
        if client.account.access_token is None:
            continue
        if is_admin and client.rng.random() < 0.3:
            await client.admin_action()
            continue
        action = client.rng.choices(names, weights)[0]
        if is_admin and action in ("delete_me", "change_password"):
            action = "read_me"  # the admin keeps its account and password
        await getattr(client, action)()


async def _make_admin(base_url: str, database_path: str, rng: random.Random) -> Client:
    http = httpx.AsyncClient(base_url=base_url, timeout=60)
    admin = Client(http, MixReport(), [], rng)
    await admin.sign_up()
    # The API has no way to make the first admin but the CLI; the database is the shortcut.
    connection = sqlite3.connect(database_path)
    with connection:
        connection.execute(
            "UPDATE users SET is_admin = 1 WHERE email_normalized = ?", (admin.account.email,)
        )
    connection.close()
    return admin


async def run_mix(
    base_url: str, database_path: str, clients: int, seconds: float, seed: int
) -> MixReport:
    rng = random.Random(seed)
    report = MixReport()
    known_ids: list[str] = []
    admin = await _make_admin(base_url, database_path, rng)
    admin.report = report
    admin.known_ids = known_ids
    https = [httpx.AsyncClient(base_url=base_url, timeout=60) for _ in range(clients - 1)]
    workers = [admin] + [
        Client(http, report, known_ids, random.Random(rng.random())) for http in https
    ]
    deadline = time.monotonic() + seconds
    try:
        await asyncio.gather(
            *(run_client(worker, deadline, is_admin=worker is admin) for worker in workers)
        )
    finally:
        for worker in workers:
            await worker.http.aclose()
    return report
