"""A partner's web server on 127.0.0.1: HTTPS with a throwaway CA, or plain HTTP.

Tests of the metadata fetcher (OPS-04), URL sources and the MDQ client serve
documents from here. ``ThrowawayCA`` makes a CA and a server certificate
(EC keys: fast) for the names a test connects by; the CA's file is what the
IdP's ``idp.metadata_fetch_ca_bundle`` names. ``PartnerServer`` answers each
path from a table a test fills (``server.routes[path] = Answer(...)`` or a
function of the request), and records every connection and request, so a
test can assert that a refused fetch never reached it.

Slow answers wait on the server's stop event rather than sleeping, so a
test's end releases them at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SERVER_NAMES = ("partner.test", "localhost", "127.0.0.1", "::1")


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class ThrowawayCA:
    """A CA made for one test session, and server certificates it signs."""

    def __init__(self, folder: Path, common_name: str = "Throwaway Test CA") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = folder / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def server_files(
        self, names: tuple[str, ...] = SERVER_NAMES, *, stem: str = "server"
    ) -> tuple[Path, Path]:
        """A certificate for ``names`` (DNS names or IP addresses) and its key."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_file = self.folder / f"{stem}.pem"
        key_file = self.folder / f"{stem}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        return cert_file, key_file


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    path: str
    headers: dict[str, str]


@dataclass
class Answer:
    """What the server sends for a path.

    ``stall``: wait (until the server stops) before any answer. ``drip``:
    after the headers, send the body a byte at a time, ``drip`` seconds apart.
    ``drip_headers``: the status line, then an endless header a byte at a
    time, ``drip_headers`` seconds apart (until the server stops).
    ``length=False``: no Content-Length, the body ends when the connection does.
    """

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stall: bool = False
    drip: float = 0.0
    drip_headers: float = 0.0
    length: bool = True


Route = Answer | Callable[[Seen], Answer]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:
        return

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(10)

    def handle(self) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.do_handshake()
            super().handle()

    def do_GET(self) -> None:
        partner = self.server.partner
        seen = Seen(self.path, dict(self.headers.items()))
        partner.requests.append(seen)
        route = partner.routes.get(self.path) or partner.routes.get("*")
        answer = Answer(404, b"not here") if route is None else route
        if callable(answer):
            answer = answer(seen)
        if answer.stall:
            partner.stopping.wait(30)
            return
        if answer.drip_headers:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not partner.stopping.wait(answer.drip_headers):
                self.wfile.write(b"x")
                self.wfile.flush()
            return
        self.send_response(answer.status)
        headers = dict(answer.headers)
        if answer.length:
            headers.setdefault("Content-Length", str(len(answer.body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if answer.drip:
            for index in range(len(answer.body)):
                self.wfile.write(answer.body[index : index + 1])
                self.wfile.flush()
                if partner.stopping.wait(answer.drip):
                    return
        else:
            self.wfile.write(answer.body)
        self.close_connection = True


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    partner: PartnerServer

    def get_request(self):
        sock, address = super().get_request()
        self.partner.connections += 1
        if self.partner.tls is not None:
            sock = self.partner.tls.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, address


class PartnerServer:
    """A web server on 127.0.0.1 (or ::1) answering from ``routes``.

    ``connections`` counts accepted TCP connections, ``requests`` the
    requests read; use as a context manager.
    """

    def __init__(
        self,
        ca: ThrowawayCA | None,
        *,
        names: tuple[str, ...] = SERVER_NAMES,
        host: str = "127.0.0.1",
    ) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Seen] = []
        self.connections = 0
        self.stopping = threading.Event()
        self.tls: ssl.SSLContext | None = None
        if ca is not None:
            cert_file, key_file = ca.server_files(names)
            self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls.load_cert_chain(cert_file, key_file)
        server_class = _Server
        if ":" in host:
            server_class = type(
                "_Server6", (_Server,), {"address_family": socket.AF_INET6}
            )
        self._server = server_class((host, 0), _Handler)
        self._server.partner = self
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="partner-server",
            daemon=True,
        )

    def url(self, path: str = "/", host: str | None = None) -> str:
        scheme = "https" if self.tls is not None else "http"
        host = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{scheme}://{host}:{self.port}{path}"

    def reset(self) -> None:
        self.routes.clear()
        self.requests.clear()
        self.connections = 0

    def __enter__(self) -> PartnerServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@contextlib.contextmanager
def serving(ca: ThrowawayCA | None, **options) -> Iterator[PartnerServer]:
    with PartnerServer(ca, **options) as server:
        yield server


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
