"""``idp-admin CONFIG serve`` as its own process: a web node the tests start and signal.

``NodeProcess`` starts the console script, reads what it prints on a
thread (so a test can wait for "serving on" or "stopping:" without
sleeping), and sends it signals; its stderr (the node's log) goes to a file
the failure message quotes.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from tests.cli import IDP_ADMIN

HOST = "127.0.0.1"
START_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class NodeProcess:
    """One ``idp-admin INI serve --listen 127.0.0.1:PORT`` process."""

    def __init__(
        self,
        ini: Path,
        port: int,
        *,
        grace: float | None = None,
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.ini = ini
        self.port = port
        self.grace = grace
        self.log = log or ini.parent / f"node-{port}.log"
        self.env = env
        self.process: subprocess.Popen | None = None
        self.lines: queue.Queue[str] = queue.Queue()
        self.printed: list[str] = []

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, *, wait: bool = True) -> NodeProcess:
        args = [
            str(IDP_ADMIN),
            str(self.ini),
            "serve",
            "--listen",
            f"{HOST}:{self.port}",
        ]
        if self.grace is not None:
            args += ["--grace", str(self.grace)]
        self.lines = queue.Queue()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
                env={**os.environ, **(self.env or {})},
            )
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        if wait:
            self.wait_for("serving on", START_SECONDS)
        return self

    def _read(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                self.printed.append(line.rstrip("\n"))
                self.lines.put(line.rstrip("\n"))
        self.lines.put("")  # end of output

    def wait_for(self, start: str, timeout: float) -> str:
        """The first line printed from now on that starts with ``start``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(
                    f"node {self.port}: no {start!r} in {timeout} s\n{self.log_tail()}"
                ) from None
            if line.startswith(start):
                return line
            if (
                line == ""
                and self.process is not None
                and self.process.poll() is not None
            ):
                raise AssertionError(
                    f"node {self.port} exited ({self.process.returncode}) "
                    f"before {start!r}\n{self.log_tail()}"
                )

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not go. None if not running."""
        if not self.running():
            return None
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def kill(self) -> None:
        if self.running():
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
