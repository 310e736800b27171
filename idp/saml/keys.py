"""The IdP's key pairs: made with ``cryptography``, kept in ``certs/``.

A private key file is written mode 0600 whatever the umask, and a key file
readable by group or others is refused at load time rather than used.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

SIGNING_KEY = "signing.key"
SIGNING_CERT = "signing.crt"
DEFAULT_KEY_SIZE = 3072
CERT_VALID_DAYS = 3650


class KeyPairError(RuntimeError):
    """A key pair is missing, unreadable or unsafe; the message says which.

    The message names paths, for the operator's console; ``reason`` says the
    same without them, safe to show to anyone who can reach ``/healthz``.
    """

    def __init__(self, message: str, reason: str = "the signing key pair is unusable"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class KeyPair:
    key_file: Path
    cert_file: Path

    @property
    def cert_pem(self) -> str:
        return self.cert_file.read_text()

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_file.read_bytes())

    @property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()


def signing_pair(certs_dir: str | os.PathLike) -> KeyPair:
    certs = Path(certs_dir)
    return KeyPair(certs / SIGNING_KEY, certs / SIGNING_CERT)


def write_private_key(path: Path, data: bytes) -> None:
    """Write a private key file readable by its owner only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # os.open's mode is filtered by the umask and ignored for an existing
        # file: set it explicitly.
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def make_pem_pair(
    common_name: str,
    *,
    key_size: int = DEFAULT_KEY_SIZE,
    valid_days: int = CERT_VALID_DAYS,
) -> tuple[bytes, bytes]:
    """A new RSA private key and a self-signed certificate, both as PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def generate(
    certs_dir: str | os.PathLike,
    common_name: str,
    *,
    key_size: int = DEFAULT_KEY_SIZE,
    overwrite: bool = False,
) -> KeyPair:
    """Create an RSA key pair and a self-signed certificate in ``certs_dir``.

    Refuses to replace an existing pair unless ``overwrite`` is set: a
    silent replacement would break every SP that trusts the old certificate.
    """
    pair = signing_pair(certs_dir)
    if not overwrite and (pair.key_file.exists() or pair.cert_file.exists()):
        raise KeyPairError(
            f"a signing key pair already exists in {pair.key_file.parent}; "
            "use --force to replace it"
        )
    pair.key_file.parent.mkdir(parents=True, exist_ok=True)
    key_pem, cert_pem = make_pem_pair(common_name, key_size=key_size)
    write_private_key(pair.key_file, key_pem)
    pair.cert_file.write_bytes(cert_pem)
    return pair


def colons(fingerprint: str) -> str:
    """A hex fingerprint as most tools print it: ``AB:CD:...``."""
    upper = fingerprint.upper()
    return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))


def kid_of(fingerprint: str) -> str:
    """A key's short id: the first 16 hex digits of its SHA-256 fingerprint."""
    return fingerprint[:16]


def kid_pair(certs_dir: str | os.PathLike, kid: str) -> KeyPair:
    """The files of the key ``kid``: ``<kid>.key`` and ``<kid>.crt``."""
    certs = Path(certs_dir)
    return KeyPair(certs / f"{kid}.key", certs / f"{kid}.crt")


def write_pair(pair: KeyPair, key_pem: bytes, cert_pem: bytes) -> None:
    """Write a new pair's files, refusing to replace either."""
    pair.key_file.parent.mkdir(parents=True, exist_ok=True)
    for path in (pair.key_file, pair.cert_file):
        if path.exists():
            raise KeyPairError(f"{path} already exists; refusing to replace it")
    write_private_key(pair.key_file, key_pem)
    pair.cert_file.write_bytes(cert_pem)


def load(certs_dir: str | os.PathLike) -> KeyPair:
    """Return the signing pair after checking it is present, safe and valid."""
    return check(signing_pair(certs_dir))


def check(
    pair: KeyPair,
    missing_hint: str = "create it with 'idp-admin CONFIG keys generate'",
    missing_reason: str = "the signing key or certificate is missing",
) -> KeyPair:
    """Return ``pair`` after checking it is present, safe and valid."""
    for path in (pair.key_file, pair.cert_file):
        if not path.is_file():
            raise KeyPairError(f"{path} is missing; {missing_hint}", missing_reason)
    mode = stat.S_IMODE(pair.key_file.stat().st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyPairError(
            f"{pair.key_file} is readable by others (mode {mode:04o}); "
            "run 'chmod 600' on it",
            reason="the signing key is readable by other users",
        )
    try:
        key = serialization.load_pem_private_key(
            pair.key_file.read_bytes(), password=None
        )
        cert = pair.certificate
    except ValueError:
        raise KeyPairError(
            f"{pair.key_file} or {pair.cert_file} is not a valid PEM key pair",
            reason="the signing key or certificate is not valid PEM",
        ) from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise KeyPairError(
            f"{pair.cert_file} does not match {pair.key_file}",
            reason="the certificate does not match the signing key",
        )
    return pair


def ensure(certs_dir: str | os.PathLike, common_name: str, **kwargs) -> KeyPair:
    """Load the pair, creating it first if there is none (development only)."""
    pair = signing_pair(certs_dir)
    if not pair.key_file.exists() and not pair.cert_file.exists():
        generate(certs_dir, common_name, **kwargs)
    return load(certs_dir)
