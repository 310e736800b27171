"""The app behind a real waitress on 127.0.0.1, and clients that send bytes as-is.

In-process WebTest hands the app a tidy environ; the crashes of OPS-09 live
in what waitress and WebOb do with bytes off the wire (a path that is not
UTF-8, a header that is not Latin-1) and in the answers waitress writes
itself. These helpers put the shipped server settings
(``development.ini``'s ``[server:main]``) in front of an app and talk to it
over a socket; ``WireProxy`` lets WebTest drive whole flows (forms,
cookies) through that socket.
"""

from __future__ import annotations

import configparser
import contextlib
import http.client
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import waitress

ROOT = Path(__file__).resolve().parent.parent
# Settings the harness chooses itself: where to listen, and the scheme
# the proxy in front would report (the app's base URL is https).
_NOT_FROM_THE_INI = (
    "use",
    "listen",
    "host",
    "port",
    "trusted_proxy",
    "clear_untrusted_proxy_headers",
)


def server_settings(ini: Path = ROOT / "development.ini") -> dict[str, str]:
    """The ini's ``[server:main]``, as pserve would pass it to waitress."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ini)
    return {
        key: value
        for key, value in parser["server:main"].items()
        if not key.startswith(_NOT_FROM_THE_INI)
    }


@contextlib.contextmanager
def serve(app, **overrides) -> Iterator[int]:
    """Serve ``app`` on a free port of 127.0.0.1 until the block ends."""
    settings = {**server_settings(), "url_scheme": "https", **overrides}
    server = waitress.create_server(app, host="127.0.0.1", port=0, **settings)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        yield server.effective_port
    finally:
        server.task_dispatcher.shutdown()

        def close_everything() -> None:
            # Run by the loop's own thread (a trigger thunk): closing a
            # socket another thread is polling fails there with EBADF.
            for dispatcher in list(server._map.values()):
                dispatcher.close()

        server.trigger.pull_trigger(close_everything)
        thread.join(timeout=10)


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def exchange(port: int, raw: bytes, *, timeout: float = 20.0) -> Answer:
    """Send ``raw`` (a whole HTTP/1.1 request) and read one answer.

    The request should say ``Connection: close``. A server that hangs up
    before answering gives status 0.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        # A server that answers early (a limit) may close before all is
        # sent; what it said is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(raw)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        return Answer(0, [], data)
    headers = [tuple(line.split(": ", 1)) for line in lines[1:] if ": " in line]
    return Answer(int(lines[0].split()[1]), headers, body)  # type: ignore[arg-type]


def request_bytes(
    method: str,
    target: bytes,
    *,
    host: bytes = b"idp.test",
    headers: tuple[tuple[bytes, bytes], ...] = (),
    body: bytes = b"",
) -> bytes:
    """An HTTP/1.1 request with every byte as given (nothing is encoded)."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: " + host]
    lines += [name + b": " + value for name, value in headers]
    if body or method == "POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding"})


class WireProxy:
    """A WSGI app that forwards each request to the served app over TCP.

    ``webtest.TestApp(WireProxy(port))`` fills forms and keeps cookies as
    usual, while every byte goes through waitress: header encoding, its own
    error answers and all.
    """

    #: Headers added to every request (what a proxy in front would set).
    extra_headers: dict[str, str] = {}

    def __init__(self, port: int) -> None:
        self.port = port

    def connection(self) -> http.client.HTTPConnection:
        """A new connection for one request (a subclass may speak TLS)."""
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def __call__(self, environ, start_response):
        path = quote(environ.get("PATH_INFO", "").encode("latin-1"), safe="/;=,@:")
        if environ.get("QUERY_STRING"):
            path += "?" + environ["QUERY_STRING"]
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        headers.update(self.extra_headers)
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else None
        conn = self.connection()
        try:
            conn.putrequest(
                environ["REQUEST_METHOD"],
                path,
                skip_host=True,
                skip_accept_encoding=True,
            )
            for name, value in headers.items():
                conn.putheader(name, value.encode("latin-1"))
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            data = response.read()
            status = f"{response.status} {response.reason}"
            start_response(
                status,
                [
                    (name, value)
                    for name, value in response.getheaders()
                    if name.lower() not in _HOP_BY_HOP
                ],
            )
            return [data]
        finally:
            conn.close()
