"""What deploy/backup and deploy/restore ask of idMe's own code.

Run with the Python of the idMe installation (the one beside ``idp-admin``),
so the ini is read exactly as the nodes read it (``%(here)s``, the
environment's secrets overriding the file, the same validation):

``settings CONFIG [ENV_FILE]``
    Shell assignments for the database (libpq's ``PG*`` variables, so the
    password never appears on a command line) and the keys directory, and
    a digest of ``idp.hmac_key`` (a restore must run under the same key:
    two-step secrets and queued mail are encrypted under keys derived
    from it).
``exec CONFIG ENV_FILE -- COMMAND ...``
    ``COMMAND`` with ``ENV_FILE``'s variables in its environment, as
    systemd's ``EnvironmentFile=`` gives them to the nodes.
``fingerprints DIR``
    ``NAME SHA256`` for each certificate (``*.crt``) in ``DIR``.
``published DUMP``
    The SHA-256 fingerprint of each key the ``pg_dump -Fc`` file ``DUMP``
    records as published (current, next, previous): the files a restore
    of that dump needs.

Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
from pathlib import Path


class Refused(Exception):
    pass


def read_env_file(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's ``EnvironmentFile=`` reads them.

    Blank lines and ``#`` or ``;`` comments are skipped; a value wrapped in
    one pair of single or double quotes loses them. Nothing is expanded
    or executed (unlike sourcing the file in a shell).
    """
    values = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise Refused(f"{path}: cannot read it ({exc.__class__.__name__})") from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise Refused(f"{path}:{number}: not a KEY=VALUE line")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def load(config: str, env_file: str) -> dict:
    from idp.cli.common import CommandError, load_settings

    if env_file:
        os.environ.update(read_env_file(env_file))
    try:
        return load_settings(config)
    except CommandError as exc:
        raise Refused(str(exc)) from None


#: libpq's environment variable for each connection parameter a database URL
#: may carry in its query (``?sslmode=verify-full``). Dropping one would
#: connect differently from the nodes, e.g. without the TLS they require.
LIBPQ_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "sslpassword": "PGSSLPASSWORD",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "gssencmode": "PGGSSENCMODE",
    "channel_binding": "PGCHANNELBINDING",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
}


def secret_digest(key: str) -> str:
    """A digest of the HMAC key that says whether two keys are one, nothing more."""
    return hashlib.sha256(b"idme-backup hmac key\0" + key.encode()).hexdigest()


def settings(config: str, env_file: str = "") -> None:
    from sqlalchemy.engine import make_url

    values = load(config, env_file)
    url = make_url(values["sqlalchemy.url"])
    if url.get_backend_name() != "postgresql":
        raise Refused(
            f"{config}: the database is {url.get_backend_name()}, not PostgreSQL; "
            "deploy/backup and deploy/restore handle PostgreSQL only"
        )
    unknown = sorted(set(url.query) - set(LIBPQ_ENV))
    if unknown:
        raise Refused(
            f"{config}: the database URL's {', '.join(unknown)} cannot be given to "
            "pg_dump/pg_restore; use libpq parameters (sslmode, sslrootcert, ...)"
        )
    certs = Path(values["idp.certs_dir"])
    if not certs.is_absolute():
        certs = Path(config).resolve().parent / certs
    assignments = {
        "PGHOST": url.host or "",
        "PGPORT": str(url.port or ""),
        "PGUSER": url.username or "",
        "PGPASSWORD": url.password or "",
        "PGDATABASE": url.database or "",
        "CERTS_DIR": str(certs),
        "HMAC_DIGEST": secret_digest(values["idp.hmac_key"]),
    }
    for parameter, variable in LIBPQ_ENV.items():
        if parameter in url.query:
            value = url.query[parameter]
            assignments[variable] = value if isinstance(value, str) else value[-1]
    for name, value in assignments.items():
        print(f"{name}={shlex.quote(value)}")


def run(config: str, env_file: str, command: list[str]) -> None:
    del config  # the command reads it itself
    if env_file:
        os.environ.update(read_env_file(env_file))
    os.execvp(command[0], command)  # noqa: S606 (the operator's own command, no shell)


def fingerprints(folder: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    for path in sorted(Path(folder).glob("*.crt")):
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except ValueError:
            raise Refused(f"{path}: not a PEM certificate") from None
        print(path.name, cert.fingerprint(hashes.SHA256()).hex())


PUBLISHED_STATES = ("current", "next", "previous")


def published(dump: str) -> None:
    import subprocess

    # pg_restore from PATH, as deploy/backup runs it; the dump is our own file.
    command = ["pg_restore", "--data-only", "--table=signing_keys", "--file=-", dump]
    result = subprocess.run(  # noqa: S603
        command,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no message"])[0]
        raise Refused(f"cannot read the dump's signing keys: {first}")
    columns: list[str] = []
    for line in result.stdout.splitlines():
        if line.startswith("COPY public.signing_keys ("):
            columns = [
                name.strip().strip('"')
                for name in line.split("(", 1)[1].split(")", 1)[0].split(",")
            ]
            continue
        if not columns:
            continue
        if line == "\\.":
            break
        row = dict(zip(columns, line.split("\t"), strict=True))
        if row["state"] in PUBLISHED_STATES:
            print(row["fingerprint"])


def main(argv: list[str]) -> int:
    try:
        if len(argv) in (2, 3) and argv[0] == "settings":
            settings(*argv[1:])
        elif len(argv) >= 5 and argv[0] == "exec" and argv[3] == "--":
            run(argv[1], argv[2], argv[4:])
        elif len(argv) == 2 and argv[0] == "fingerprints":
            fingerprints(argv[1])
        elif len(argv) == 2 and argv[0] == "published":
            published(argv[1])
        else:
            raise Refused(
                "usage: backup_helper.py settings|exec|fingerprints|published ..."
            )
    except Refused as exc:
        print(f"{exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
