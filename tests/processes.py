"""Real service processes for tests: `python -m uvicorn app.main:app` on free local ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.config import Settings

STARTUP_TIMEOUT_SECONDS = 60.0


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it; a race is possible but harmless)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def service_environment(**values: str) -> dict[str, str]:
    """The environment for a service process: cheap password hashing, then the given settings.

    No Passgate setting is inherited from the test's own environment, and the processes run in
    a folder of their own, so a developer's .env file is not read either.
    """
    inherited = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    return {
        **inherited,
        "ENVIRONMENT": "test",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_THREADS": "1",
        **values,
    }


@dataclass
class ServiceProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
        """Block until /health/ready answers 200; fail with the service's log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"service at {self.url} exited:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"service at {self.url} not ready in {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_service(
    env: dict[str, str], workdir: Path, *, port: int | None = None, as_make_run: bool = False
) -> ServiceProcess:
    """Start the service on `port` (one the OS picks by default); its output goes to a log file.

    Pass a port chosen beforehand when the service must know its own address, as in PUBLIC_URL.
    `as_make_run` starts it the way `make run` does (`python -m app serve`), not bare uvicorn.
    """
    port = port or free_port()
    log = workdir / f"service-{port}.log"
    if as_make_run:
        command = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)]
    else:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, env=env, cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT
        )
    return ServiceProcess(process=process, url=f"http://127.0.0.1:{port}", log=log)


@contextlib.contextmanager
def running_services(
    count: int, env: dict[str, str], workdir: Path
) -> Iterator[list[ServiceProcess]]:
    """`count` service processes started at the same moment, each ready when this yields."""
    workdir.mkdir(parents=True, exist_ok=True)
    services: list[ServiceProcess] = []
    try:
        for _ in range(count):
            services.append(start_service(env, workdir))
        for service in services:
            service.wait_ready()
        yield services
    finally:
        for service in services:
            service.stop()


def start_serve(
    env: dict[str, str], workdir: Path, *, port: int, workers: int = 1
) -> ServiceProcess:
    """`python -m app serve` (what make run and the image run), ready when this returns."""
    log = workdir / f"serve-{port}-{time.monotonic_ns()}.log"
    root = Path(__file__).resolve().parent.parent
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", str(workers)],
            env={**env, "PYTHONPATH": str(root)},
            cwd=workdir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    service = ServiceProcess(process=process, url=f"http://127.0.0.1:{port}", log=log)
    try:
        service.wait_ready()
    except BaseException:
        service.stop()
        raise
    return service
