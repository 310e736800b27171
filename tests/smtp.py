"""A real SMTP server on 127.0.0.1 for delivery tests (aiosmtpd).

It speaks STARTTLS with AUTH (as a ministry relay on port 587 does) or
implicit TLS (port 465), with a throwaway certificate for 127.0.0.1 that the
client trusts through ``mail.ca_file``. Messages land in ``server.messages``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from email import message_from_bytes, policy
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

USERNAME = "idme"
PASSWORD = "smtp-test-only-password"
HOST = "127.0.0.1"


def make_certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp.crt", folder / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class _Handler:
    def __init__(self, server: SMTPServer) -> None:
        self.server = server

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.original_content, policy=policy.SMTP)
        with self.server.lock:
            self.server.messages.append(message)
            self.server.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


def _authenticate(server, session, envelope, mechanism, auth_data):
    ok = (
        auth_data is not None
        and auth_data.login == USERNAME.encode()
        and auth_data.password == PASSWORD.encode()
    )
    # handled=False: let aiosmtpd answer a refusal with 535 itself.
    return AuthResult(success=ok, handled=False)


class SMTPServer:
    """Start and stop at will on a fixed port, keeping what it received."""

    def __init__(self, cert_file: Path, key_file: Path, *, implicit_tls: bool) -> None:
        self.port = free_port()
        self.cert_file = cert_file
        self.implicit_tls = implicit_tls
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.load_cert_chain(cert_file, key_file)
        self.messages: list = []
        self.envelopes: list = []
        self.lock = threading.Lock()
        self.controller: Controller | None = None

    def start(self) -> None:
        common = {
            "hostname": HOST,
            "port": self.port,
            "authenticator": _authenticate,
            "ready_timeout": 10,
        }
        if self.implicit_tls:
            # The whole connection is TLS; aiosmtpd's session does not know
            # it, so its "AUTH only after STARTTLS" rule must be off here.
            controller = Controller(
                _Handler(self), ssl_context=self.tls, auth_require_tls=False, **common
            )
        else:
            controller = Controller(
                _Handler(self),
                tls_context=self.tls,
                require_starttls=True,
                auth_require_tls=True,
                **common,
            )
        controller.start()
        self.controller = controller

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def settings(self) -> dict:
        """The ``mail.*`` settings that reach this server."""
        return {
            "mail.backend": "idp.services.delivery.SMTPSender",
            "mail.host": HOST,
            "mail.port": self.port,
            "mail.security": "ssl" if self.implicit_tls else "starttls",
            "mail.username": USERNAME,
            "mail.smtp_password": PASSWORD,
            "mail.ca_file": str(self.cert_file),
            "mail.timeout": 10,
        }
