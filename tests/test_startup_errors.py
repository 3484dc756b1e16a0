"""Every start-up mistake is one line naming the variable and the fix, from the real commands.

Each case runs what an operator runs (`python -m app serve`, which make run and the image
run; `alembic upgrade head`; `python -m app create-admin`) and checks that the whole of
stderr is one `passgate: ...` line: no traceback, no Pydantic "Value error, " prefix.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import make_url

from tests.conftest import TEST_DATABASE_URL
from tests.processes import free_port, service_environment

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC = Path(sys.executable).with_name("alembic")
SECRET = "startup-test-secret-key-that-is-long-enough-for-hs256"


def run(command: list[str], workdir: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = service_environment(**{"SECRET_KEY": SECRET, "PYTHONPATH": str(ROOT), **settings})
    return subprocess.run(
        command,
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def serve(workdir: Path, *, port: int | None = None, **settings: str):
    port = port or free_port()
    return run([sys.executable, "-m", "app", "serve", "--port", str(port)], workdir, **settings)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line the command printed on stderr before exiting with an error."""
    assert result.returncode != 0, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("passgate: "), line
    assert "Value error" not in line
    return line


def postgres_url(**parts: object) -> str:
    if TEST_DATABASE_URL is None:
        pytest.skip("TEST_DATABASE_URL is not set: no PostgreSQL server to get wrong")
    url = make_url(TEST_DATABASE_URL).set(**parts)  # type: ignore[arg-type]
    return url.render_as_string(hide_password=False)


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [
        ("not a url", "DATABASE_URL: is not a database URL; write sqlite+aiosqlite:///"),
        (
            "postgresql://postgres@127.0.0.1:5432/passgate",
            "DATABASE_URL: postgresql:// is not an async driver; write postgresql+asyncpg://",
        ),
        (
            "postgres://postgres@127.0.0.1/passgate",
            "DATABASE_URL: postgres:// is not an async driver; write postgresql+asyncpg://",
        ),
        (
            "postgresql+psycopg2://postgres@127.0.0.1/passgate",
            "DATABASE_URL: postgresql+psycopg2:// is not an async driver",
        ),
        ("sqlite:///./data/app.db", "DATABASE_URL: sqlite:// is not an async driver"),
        ("mysql+aiomysql://root@127.0.0.1/passgate", "DATABASE_URL: mysql+aiomysql:// is not"),
    ],
)
def test_a_database_url_that_cannot_work_is_one_line(
    tmp_path: Path, database_url: str, expected: str
) -> None:
    line = one_line(serve(tmp_path, DATABASE_URL=database_url))
    assert line.startswith(f"passgate: invalid configuration: {expected}"), line
    assert list(tmp_path.iterdir()) == []  # refused before anything was created


def test_a_wrong_port_is_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/passgate"

    line = one_line(serve(tmp_path, DATABASE_URL=url))

    assert line == (
        f"passgate: DATABASE_URL: nothing accepts connections at 127.0.0.1:{port}; "
        "is PostgreSQL running there, and is that its port?"
    )


def test_an_unknown_host_is_one_line(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://postgres@no-such-host.invalid:5432/passgate"

    line = one_line(serve(tmp_path, DATABASE_URL=url))

    assert 'DATABASE_URL: host "no-such-host.invalid" is not known' in line


def test_a_missing_database_is_one_line(tmp_path: Path) -> None:
    url = postgres_url(database="passgate_no_such_database")

    line = one_line(serve(tmp_path, DATABASE_URL=url))

    assert 'DATABASE_URL: database "passgate_no_such_database" does not exist' in line
    assert "createdb passgate_no_such_database" in line


def test_an_unknown_role_is_one_line(tmp_path: Path) -> None:
    url = postgres_url(username="passgate_no_such_role")

    line = one_line(serve(tmp_path, DATABASE_URL=url))

    assert 'role "passgate_no_such_role" does not exist' in line
    assert "fix the name before the @" in line


@pytest.fixture
def password_refusing_server() -> Iterator[int]:
    """A server speaking just enough of PostgreSQL's protocol to refuse every password.

    The machine's PostgreSQL trusts local connections, so it never refuses a password; this
    one answers as a server configured for passwords does (SQLSTATE 28P01).
    """
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def message(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack("!I", len(body) + 4) + body

    def serve_one(connection: socket.socket) -> None:
        with connection:
            while True:
                length = struct.unpack("!I", connection.recv(4, socket.MSG_WAITALL))[0]
                body = connection.recv(length - 4, socket.MSG_WAITALL)
                if struct.unpack("!I", body[:4])[0] == 80877103:  # SSLRequest
                    connection.sendall(b"N")
                    continue
                break
            connection.sendall(message(b"R", struct.pack("!I", 3)))  # cleartext password
            connection.recv(4096)
            fields = (
                b'SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user "passgate"\0\0'
            )
            connection.sendall(message(b"E", fields))

    def accept_forever() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve_one, args=(connection,), daemon=True).start()

    threading.Thread(target=accept_forever, daemon=True).start()
    try:
        yield port
    finally:
        listener.close()


def test_a_wrong_password_is_one_line(tmp_path: Path, password_refusing_server: int) -> None:
    port = password_refusing_server
    url = f"postgresql+asyncpg://passgate:wrong-password-1234@127.0.0.1:{port}/passgate"

    result = serve(tmp_path, DATABASE_URL=url)

    line = one_line(result)
    assert line == (
        f"passgate: DATABASE_URL: PostgreSQL at 127.0.0.1:{port} refused the password of user "
        '"passgate"; fix the password in the URL (or PGPASSWORD)'
    )
    assert "wrong-password-1234" not in result.stderr


def test_a_port_in_use_is_one_line_and_checked_before_migrating(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        line = one_line(serve(tmp_path, port=port))

    assert line == (
        f"passgate: port {port} on 127.0.0.1 is already in use (another Passgate?); stop what "
        f"listens there, or pick another port with PORT={port + 1}"
    )
    # Nothing was migrated: not even the data folder of the default SQLite database exists.
    assert list(tmp_path.iterdir()) == []


def test_a_sqlite_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    # A file where the folder should be: refused even for root, as CI runs.
    tmp_path.joinpath("volume").write_text("")
    database = tmp_path / "volume" / "data" / "app.db"

    line = one_line(serve(tmp_path, DATABASE_URL=f"sqlite+aiosqlite:///{database}"))

    assert line.startswith(f"passgate: DATABASE_URL: cannot create {database.parent}"), line


def test_a_failed_start_leaves_no_migration_lock_behind(tmp_path: Path) -> None:
    # The migration runs, then the command fails (the password is refused): nothing but the
    # database itself stays in its folder.
    data = tmp_path / "data"
    data.mkdir()
    result = run(
        [sys.executable, "-m", "app", "create-admin", "--email", "root@example.com"],
        tmp_path,
        DATABASE_URL=f"sqlite+aiosqlite:///{data / 'app.db'}",
        ADMIN_PASSWORD="short",
    )
    one_line(result)
    assert sorted(path.name for path in data.iterdir()) == ["app.db"]


def test_production_without_a_secret_says_how_to_make_one(tmp_path: Path) -> None:
    result = serve(
        tmp_path, ENVIRONMENT="production", SECRET_KEY="", PUBLIC_URL="https://auth.example.com"
    )

    line = one_line(result)
    assert line == (
        "passgate: invalid configuration: SECRET_KEY is required when ENVIRONMENT=production; "
        "generate one with: python -m app generate-secret"
    )


def test_alembic_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    bad_driver = run(
        [str(ALEMBIC), "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
        tmp_path,
        DATABASE_URL="postgresql://postgres@127.0.0.1/passgate",
    )
    port = free_port()
    no_server = run(
        [str(ALEMBIC), "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
        tmp_path,
        DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/passgate",
    )

    assert "DATABASE_URL: postgresql:// is not an async driver" in one_line(bad_driver)
    assert f"nothing accepts connections at 127.0.0.1:{port}" in one_line(no_server)


def test_create_admin_says_what_is_wrong_with_the_database_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    result = run(
        [sys.executable, "-m", "app", "create-admin", "--email", "root@example.com"],
        tmp_path,
        DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/passgate",
        ADMIN_PASSWORD="correct-horse-battery",
    )

    assert f"nothing accepts connections at 127.0.0.1:{port}" in one_line(result)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never says a word: some other service's port."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept_forever() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_forever, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for connection in accepted:
            connection.close()


@pytest.fixture
def dropping_host() -> Iterator[int]:
    """A port whose connection attempts go unanswered, as a host behind a firewall that drops.

    A listener that never accepts, its queue filled: the kernel drops further SYNs, so a client
    waits in connect() as it does for an unreachable host (no refusal ever comes back).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    while True:
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
        _, writable, _ = select.select([], [filler], [], 0.5)
        if not writable:  # this attempt hangs: the queue is full
            break
        assert len(fillers) < 10, "the listen queue never filled"
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def every_command(workdir: Path) -> dict[str, list[str]]:
    """What an operator runs that connects to the database (make run and the image: serve)."""
    users = workdir / "users.jsonl"
    users.write_text("")
    return {
        "serve": [sys.executable, "-m", "app", "serve", "--port", str(free_port())],
        "alembic": [str(ALEMBIC), "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
        "create-admin": [sys.executable, "-m", "app", "create-admin", "--email", "a@example.com"],
        "import-users": [sys.executable, "-m", "app", "import-users", str(users)],
    }


@pytest.mark.parametrize("command", ["serve", "alembic", "create-admin", "import-users"])
@pytest.mark.parametrize("server", ["silent_server", "dropping_host"])
def test_a_server_that_never_answers_is_one_line_after_the_connect_timeout(
    tmp_path: Path, command: str, server: str, request: pytest.FixtureRequest
) -> None:
    # Without a deadline asyncpg waits 60 s (alembic did); run() gives up at 60 s.
    port = request.getfixturevalue(server)

    result = run(
        every_command(tmp_path)[command],
        tmp_path,
        DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/passgate",
        DB_CONNECT_TIMEOUT_SECONDS="1",
        ADMIN_PASSWORD="correct-horse-battery",
    )

    assert one_line(result) == (
        f"passgate: DATABASE_URL: no answer as PostgreSQL from 127.0.0.1:{port} within 1 s "
        "(DB_CONNECT_TIMEOUT_SECONDS); are the host and port right, and does a firewall let "
        "the connection through?"
    )


def test_an_smtp_ca_file_that_is_not_one_is_one_line(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")

    missing = one_line(serve(tmp_path, SMTP_CA_FILE=str(tmp_path / "nowhere.pem")))
    empty = one_line(serve(tmp_path, SMTP_CA_FILE=str(not_pem)))

    assert missing == (
        f"passgate: invalid configuration: SMTP_CA_FILE: cannot read {tmp_path / 'nowhere.pem'} "
        "(No such file or directory)"
    )
    assert (
        empty
        == f"passgate: invalid configuration: SMTP_CA_FILE: {not_pem} holds no PEM certificate"
    )
