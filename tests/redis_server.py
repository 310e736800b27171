"""A real, throwaway ``redis-server`` on 127.0.0.1 for the rate-limit tests.

It keeps nothing on disk (``--save ''``, ``--appendonly no``), works in its
own folder and listens on a free port. Debian's package ``redis-server``
provides the binary; without it :func:`missing_reason` says why the tests
are skipped.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

HOST = "127.0.0.1"
BINARY = "redis-server"
START_SECONDS = 10
STOP_SECONDS = 10
PORT_TRIES = 3


def missing_reason() -> str | None:
    if shutil.which(BINARY) is None:
        return f"{BINARY} is not installed (Debian package redis-server)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    """True once the server replies +PONG to PING."""
    try:
        with socket.create_connection((HOST, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process; use as a context manager."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _launch(self, port: int) -> subprocess.Popen:
        return subprocess.Popen(
            [
                BINARY,
                "--bind",
                HOST,
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                "--logfile",
                str(self.folder / "redis.log"),
                "--daemonize",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        # Another process may take the free port before redis-server binds
        # it; then the server exits and we try another port.
        for _ in range(PORT_TRIES):
            self.port = free_port()
            self.process = self._launch(self.port)
            deadline = time.monotonic() + START_SECONDS
            while time.monotonic() < deadline and self.process.poll() is None:
                if _answers(self.port):
                    return self
                time.sleep(0.05)
            self.stop()
        log = self.folder / "redis.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"{BINARY} did not start:\n{tail}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
