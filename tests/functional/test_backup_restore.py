"""deploy/backup and deploy/restore, rehearsed on PostgreSQL with the real tools.

Issue 17. An operator's IdP is made as an operator makes it: ``idp-admin``
creates the schema, the signing key, a module, a role and a user, imports a
partner SP and leaves a key rollover half-way (a previous and a current
key); the user chooses a password on the real pages and signs in to
the SP. ``deploy/backup`` (``pg_dump -Fc``, the keys, the ini and the
environment file) runs as a process; ``deploy/restore`` puts the archive
into a fresh database and a fresh keys directory, as on a new machine, and
ends with ``idp-admin doctor``. The restored IdP must then be the same IdP:
the same keys signing (the SP's stored metadata still verifies its
Response), the same password, the same pseudonym for the SP, an intact
audit chain. A damaged or crafted archive is refused in one line, before
anything is written.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import inspect

from idp.db import make_engine
from tests.app import (
    base_settings,
    committing_browser,
    make_app,
)
from tests.cli import (
    IDP_ADMIN,
    NUMBER,
    add_user,
    ok,
    printed_password,
    scratch_ini,
    set_settings,
)
from tests.factories import NEW_PASSWORD
from tests.interop.sps import SUCCESS, Pysaml2SP
from tests.keys import signed_by
from tests.postgresql import scratch_databases
from tests.registration import temporary_password_from
from tests.signin import first_sign_in, sign_in

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BACKUP = ROOT / "deploy" / "backup"
RESTORE = ROOT / "deploy" / "restore"
SP_ID = "https://sp1.test/sp"
SECOND = "850615-10-5432"


@dataclass
class Site:
    """The backed-up IdP: its files, and what the SP and the user hold."""

    tmp: Path
    source_ini: Path
    source_env: Path
    hmac_key: str
    source_url: str
    spare_urls: list[str]
    archive: Path
    sp: Pysaml2SP
    name_id: str
    current_cert: Path  # a copy of the signing certificate before the backup
    published: list[str]  # the certificates' file names, as backed up
    tool_log: Path  # the command lines pg_dump and psql were given
    audit: str  # what audit verify said of the source


@contextlib.contextmanager
def app_on(url: str, certs: Path, hmac_key: str, tmp: Path):
    """The app on database ``url`` with keys ``certs``, as a node runs it."""
    settings = {
        **base_settings(tmp),
        "sqlalchemy.url": url,
        "idp.certs_dir": str(certs),
        "idp.hmac_key": hmac_key,
    }
    engine = make_engine(settings)
    try:
        yield make_app(settings, engine)
    finally:
        engine.dispose()


def sso(client, sp: Pysaml2SP):
    """A signed-in browser at the SP: the Response's XML and what the SP made of it."""
    path, request_id = sp.redirect_request()
    page = client.get(path, status=200)
    fields = {"SAMLResponse": page.forms["saml-post-form"]["SAMLResponse"].value}

    return base64.b64decode(fields["SAMLResponse"]), sp.consume(fields, request_id)


def tool_env(extra_path: Path | None = None) -> dict[str, str]:
    """The environment deploy/* run in: no database URL or key from the test's."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("IDP_DATABASE_URL", "IDP_HMAC_KEY", "PG"))
    }
    path = [str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")]
    if extra_path:
        path.insert(0, str(extra_path))
    env["PATH"] = ":".join(path)
    env["PYTHONPATH"] = str(ROOT)
    env["IDP_ADMIN"] = str(IDP_ADMIN)
    return env


def run(*args, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        env=tool_env(extra_path),
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def refused(result: subprocess.CompletedProcess, words: str) -> None:
    """One line on stderr naming the problem, exit status 1, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert words in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def logging_shims(folder: Path, log: Path) -> Path:
    """pg_dump, pg_restore and psql that note their command line, then run."""
    folder.mkdir()
    for tool in ("pg_dump", "pg_restore", "psql"):
        real = shutil.which(tool)
        assert real, f"{tool} is not installed"
        shim = folder / tool
        shim.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\nexec "{real}" "$@"\n')
        shim.chmod(0o755)
    return folder


def new_machine(site: Site, name: str, url: str, hmac_key: str | None = None):
    """The archive's ini and environment file installed on a new machine."""
    folder = site.tmp / name
    folder.mkdir()
    with tarfile.open(site.archive) as archive:
        ini_text = archive.extractfile("config/test.ini").read().decode()
        env_text = archive.extractfile("config/idme.env").read().decode()
    ini = folder / "test.ini"
    ini.write_text(ini_text)
    set_settings(ini, {"idp.certs_dir": str(folder / "certs")})
    env_text = re.sub(r"(?m)^IDP_DATABASE_URL=.*$", f"IDP_DATABASE_URL={url}", env_text)
    if hmac_key is not None:
        env_text = re.sub(
            r"(?m)^IDP_HMAC_KEY=.*$", f"IDP_HMAC_KEY={hmac_key}", env_text
        )
    env = folder / "idme.env"
    env.write_text(env_text)
    return ini, env, folder / "certs"


def tables(url: str) -> list[str]:
    engine = make_engine({"sqlalchemy.url": url})
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    names = ("backup_src", "restore_a", "restore_b")
    with (
        scratch_databases(*names) as (source_url, *spare),
        pytest.MonkeyPatch.context() as env,
    ):
        tmp = tmp_path_factory.mktemp("backup")
        source = tmp / "source"
        source.mkdir()
        ini = scratch_ini(source)
        # The shape of production: the database and the HMAC key come from the
        # environment file; the ini names a database that is not there.
        set_settings(
            ini, {"sqlalchemy.url": "postgresql+psycopg://nobody@127.0.0.1:9/none"}
        )
        hmac_key = secrets.token_urlsafe(48)
        env_file = source / "idme.env"
        env_file.write_text(
            "# idMe's secrets\n"
            f'IDP_DATABASE_URL="{source_url}"\n'
            f"IDP_HMAC_KEY={hmac_key}\n"
        )
        env.setenv("IDP_DATABASE_URL", source_url)
        env.setenv("IDP_HMAC_KEY", hmac_key)

        ok(ini, "db", "upgrade")
        ok(ini, "keys", "generate")
        names_ = ("--name-ms", "Modul Satu", "--name-en", "Module One")
        ok(ini, "module", "create", "m1", *names_)
        ok(ini, "role", "create", "guru", "--name-ms", "Guru", "--name-en", "Teacher")
        ok(ini, "role", "grant-module", "guru", "m1")
        result = add_user(ini, "--role", "guru", "--print-password", "--locale", "en")
        assert result.returncode == 0, result.stderr
        temporary = printed_password(result.stdout)
        # A second user whose temporary password waits in the outbox, sealed
        # under the HMAC key: it must still open after the restore.
        result = add_user(
            ini, "--role", "guru", number=SECOND, email="siti@example.com.my"
        )
        assert result.returncode == 0, result.stderr
        # A rollover half-way: the second key signing, the first still
        # published as previous (not retired yet).
        ok(ini, "keys", "rollover", "prepare")
        ok(ini, "keys", "rollover", "activate", "--force")
        certs = source / "certs"

        with app_on(source_url, certs, hmac_key, source) as app:
            client = committing_browser(app)
            # The first sign-in: the user chooses a password and an image.
            first_sign_in(client, NUMBER, temporary, NEW_PASSWORD)
            sp = Pysaml2SP(SP_ID, client.get("/saml/metadata").body, encryption=False)
            (source / "sp.xml").write_bytes(sp.metadata())
            ok(ini, "sp", "import", source / "sp.xml", "--module", "m1")
            _, login = sso(client, sp)
            assert login.status == SUCCESS

            current_cert = tmp / "signing-before.crt"
            xml, _ = sso(client, sp)
            signer = [path for path in certs.glob("*.crt") if signed_by(xml, path)]
            assert len(signer) == 1, signer
            shutil.copy(signer[0], current_cert)

        audit = ok(ini, "audit", "verify")
        assert audit.startswith("audit chain intact: ")

        out = tmp / "backups"
        out.mkdir()
        log = tmp / "tools.log"
        shims = logging_shims(tmp / "shims", log)
        result = run(
            BACKUP, "--env-file", env_file, "--output", out, ini, extra_path=shims
        )
        assert result.returncode == 0, result.stderr
        (archive,) = out.glob("idme-backup-*.tar")
        assert result.stdout.startswith(f"{archive}: revision ")
        yield Site(
            tmp=tmp,
            source_ini=ini,
            source_env=env_file,
            hmac_key=hmac_key,
            source_url=source_url,
            spare_urls=spare,
            archive=archive,
            sp=sp,
            name_id=login.name_id,
            current_cert=current_cert,
            published=sorted(path.name for path in certs.glob("*.crt")),
            tool_log=log,
            audit=audit,
        )


def test_the_archive_is_private_and_says_what_it_holds(site):
    """The archive holds private keys and secrets: mode 0600, no password on a command line."""
    assert stat.S_IMODE(site.archive.stat().st_mode) == 0o600
    with tarfile.open(site.archive) as archive:
        assert sorted(archive.getnames()) == [
            "MANIFEST",
            "config",
            "config/idme.env",
            "config/test.ini",
            "database.dump",
            "keys.tar",
        ]
        manifest = archive.extractfile("MANIFEST").read().decode()
        inner = io.BytesIO(archive.extractfile("keys.tar").read())
    with tarfile.open(fileobj=inner) as keys:
        key_files = {member.name: member.mode for member in keys.getmembers()}
    assert manifest.startswith("format: idme-backup 1\n")
    [revision] = re.findall(r"^revision: (\S+)$", manifest, re.M)
    head = sorted((ROOT / "idp" / "migrations" / "versions").glob("0*.py"))[-1].stem
    assert revision == head
    assert (
        sorted(re.findall(r"^key: (\S+) [0-9a-f]{64}$", manifest, re.M))
        == site.published
    )
    assert len(site.published) == 2  # previous, current
    parts = re.findall(r"^part: ([0-9a-f]{64})  (\S+)$", manifest, re.M)
    assert sorted(name for _, name in parts) == [
        "config/idme.env",
        "config/test.ini",
        "database.dump",
        "keys.tar",
    ]
    assert all(
        mode == 0o600 for name, mode in key_files.items() if name.endswith(".key")
    )
    # libpq reads the password from the environment: a URL or -W on the
    # command line would show it to every user of the machine in ps.
    password = re.search(r"//[^:]+:([^@]+)@", site.source_url)
    logged = site.tool_log.read_text()
    assert "pg_dump --format=custom" in logged
    if password:
        assert password.group(1) not in logged


def test_restore_into_a_fresh_database_gives_back_the_same_idp(site):
    target = site.spare_urls[0]
    ini, env, certs = new_machine(site, "restored", target)
    result = run(RESTORE, "--env-file", env, site.archive, ini)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "restored " in result.stdout
    doctor = [
        line
        for line in result.stdout.splitlines()
        if line[:4] in ("ok  ", "warn", "FAIL")
    ]
    assert doctor and not any(line.startswith("FAIL") for line in doctor), result.stdout
    assert any(line.startswith("ok   database:") for line in doctor), result.stdout

    # The keys, with their modes and owner.
    assert sorted(path.name for path in certs.glob("*.crt")) == site.published
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    for key in certs.glob("*.key"):
        info = key.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o600, os.getuid())

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("IDP_DATABASE_URL", target)
        monkeypatch.setenv("IDP_HMAC_KEY", site.hmac_key)
        # The same chain, event for event, and it still verifies.
        assert ok(ini, "audit", "verify") == site.audit
        assert SP_ID in ok(ini, "sp", "list")
        # The mail queued before the backup is delivered, and opens.
        ok(ini, "mail", "deliver")
    [message] = [
        message_from_bytes(path.read_bytes(), policy=policy.SMTP)
        for path in (site.tmp / "source" / "mail").glob("*.eml")
        if b"siti@example.com.my" in path.read_bytes()
    ]
    second_password = temporary_password_from(message)

    # The same IdP: the user's password, the SP's pseudonym, the signing key
    # the SP holds in its stored metadata (it was never given the new files).
    with app_on(target, certs, site.hmac_key, site.tmp / "restored") as app:
        client = committing_browser(app)
        signed_in = sign_in(client, NUMBER, NEW_PASSWORD)
        assert not signed_in.location.endswith("/password/new")
        xml, login = sso(client, site.sp)
        # The second user's mailed temporary password works, and asks for
        # their own password.
        first = sign_in(committing_browser(app), SECOND, second_password)
        assert first.location.endswith("/password/new")
    assert login.status == SUCCESS
    assert login.name_id == site.name_id
    assert signed_by(xml, site.current_cert)


def test_restore_refuses_a_database_or_keys_directory_in_use(site):
    # Into the source's own database: it holds the tables.
    ini, env, _ = new_machine(site, "in-use", site.source_url)
    result = run(RESTORE, "--env-file", env, site.archive, ini)
    refused(result, "already holds")
    refused(result, "restore into an empty database, or pass --force")
    assert not (site.tmp / "in-use" / "certs").exists()

    # A keys directory with files in it: nobody's keys are replaced unasked.
    ini, env, certs = new_machine(site, "keys-in-use", site.spare_urls[1])
    certs.mkdir()
    (certs / "signing.key").write_text("someone's key")
    result = run(RESTORE, "--env-file", env, site.archive, ini)
    refused(result, "already holds files: restore into an empty keys directory")
    assert (certs / "signing.key").read_text() == "someone's key"
    assert tables(site.spare_urls[1]) == []


def test_restore_refuses_another_hmac_key(site):
    """Two-step secrets and queued mail are sealed under the HMAC key: a restore under another is refused."""
    ini, env, certs = new_machine(
        site, "other-key", site.spare_urls[1], hmac_key=secrets.token_urlsafe(48)
    )
    refused(run(RESTORE, "--env-file", env, site.archive, ini), "idp.hmac_key")
    assert tables(site.spare_urls[1]) == []
    assert not certs.exists()


def rewritten(site: Site, name: str, change) -> Path:
    """A copy of the archive with ``change(members)`` applied to its parts."""
    with tarfile.open(site.archive) as archive:
        members = {
            member.name: (
                member,
                archive.extractfile(member).read() if member.isfile() else None,
            )
            for member in archive.getmembers()
        }
    change(members)
    path = site.tmp / name
    with tarfile.open(path, "w") as archive:
        for member, data in members.values():
            if data is not None:
                member.size = len(data)
            archive.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def test_a_damaged_dump_is_refused_before_anything_is_written(site):
    def flip(members):
        member, data = members["database.dump"]
        middle = len(data) // 2
        members["database.dump"] = (
            member,
            data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :],
        )

    damaged = rewritten(site, "damaged.tar", flip)
    ini, env, certs = new_machine(site, "damaged", site.spare_urls[1])
    refused(
        run(RESTORE, "--env-file", env, damaged, ini),
        "damaged: database.dump does not match its MANIFEST sha256",
    )
    assert tables(site.spare_urls[1]) == []
    assert not certs.exists()

    truncated = site.tmp / "truncated.tar"
    truncated.write_bytes(site.archive.read_bytes()[: site.archive.stat().st_size // 2])
    refused(run(RESTORE, "--env-file", env, truncated, ini), str(truncated))
    assert tables(site.spare_urls[1]) == []


def test_a_crafted_keys_tar_with_a_link_is_refused(site):
    """Whoever can write the archive (and so its manifest) gets no symlink into the keys directory."""

    def link(members):
        keys = io.BytesIO()
        with tarfile.open(fileobj=keys, mode="w") as inner:
            info = tarfile.TarInfo("./signing.key")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/shadow"
            inner.addfile(info)
        data = keys.getvalue()
        member, _ = members["keys.tar"]
        members["keys.tar"] = (member, data)
        manifest_member, manifest = members["MANIFEST"]
        text = re.sub(
            r"(?m)^part: [0-9a-f]{64}  keys\.tar$",
            f"part: {hashlib.sha256(data).hexdigest()}  keys.tar",
            manifest.decode(),
        )
        members["MANIFEST"] = (manifest_member, text.encode())

    crafted = rewritten(site, "crafted.tar", link)
    ini, env, certs = new_machine(site, "crafted", site.spare_urls[1])
    refused(run(RESTORE, "--env-file", env, crafted, ini), "not a plain file")
    assert tables(site.spare_urls[1]) == []
    assert not certs.exists()

    # An owner that chown would read as an option.
    def owner(members):
        member, manifest = members["MANIFEST"]
        text = re.sub(
            r"(?m)^keys-owner: .*$",
            "keys-owner: --reference=/etc/shadow:root",
            manifest.decode(),
        )
        members["MANIFEST"] = (member, text.encode())

    crafted = rewritten(site, "owner.tar", owner)
    refused(run(RESTORE, "--env-file", env, crafted, ini), "is not a USER:GROUP name")
    assert tables(site.spare_urls[1]) == []
    assert not certs.exists()


def test_backup_refuses_sqlite_and_a_missing_config_in_one_line(site, tmp_path):
    sqlite_ini = scratch_ini(tmp_path)
    refused(run(BACKUP, "--output", tmp_path, sqlite_ini), "not PostgreSQL")
    refused(
        run(BACKUP, "--output", tmp_path, tmp_path / "nothing.ini"),
        "no such configuration file",
    )
    # A URL parameter libpq would not get is refused, not dropped: without
    # it pg_dump could connect without the TLS the nodes require.
    url_ini = scratch_ini(tmp_path)
    set_settings(
        url_ini,
        {"sqlalchemy.url": site.source_url + "?sslmode=require&prepare_threshold=5"},
    )
    refused(run(BACKUP, "--output", tmp_path, url_ini), "prepare_threshold cannot be")
    set_settings(url_ini, {"sqlalchemy.url": site.source_url + "?sslmode=verify-full"})
    helper = ROOT / "deploy" / "backup_helper.py"
    shell = run(sys.executable, helper, "settings", url_ini)
    assert shell.returncode == 0, shell.stderr
    assert "PGSSLMODE=verify-full" in shell.stdout.splitlines()
    assert not list(tmp_path.glob("idme-backup-*"))


def test_restore_with_force_replaces_a_used_database_and_keeps_the_old_keys(site):
    target = site.spare_urls[0]
    ini, env, certs = new_machine(site, "forced", target)
    # What the first restore test may have left, or a database of its own.
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("IDP_DATABASE_URL", target)
        monkeypatch.setenv("IDP_HMAC_KEY", site.hmac_key)
        if not tables(target):
            ok(ini, "db", "upgrade")
        ok(
            ini,
            "role",
            "create",
            "extra",
            "--name-ms",
            "Tambahan",
            "--name-en",
            "Extra",
        )
    certs.mkdir()
    (certs / "old.key").write_text("the key this machine had")

    result = run(RESTORE, "--force", "--env-file", env, site.archive, ini)
    assert result.returncode == 0, (result.stdout, result.stderr)
    [aside] = certs.parent.glob("certs.before-restore-*")
    assert (aside / "old.key").read_text() == "the key this machine had"
    assert sorted(path.name for path in certs.glob("*.crt")) == site.published
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("IDP_DATABASE_URL", target)
        monkeypatch.setenv("IDP_HMAC_KEY", site.hmac_key)
        assert ok(ini, "audit", "verify") == site.audit  # the dump's chain, whole
        assert "extra" not in ok(ini, "role", "list")


def test_backup_refuses_when_a_published_key_is_missing_from_the_keys(site, tmp_path):
    """A backup whose restore could not sign (a key the database publishes has no file) is no backup."""
    certs = tmp_path / "certs"
    shutil.copytree(site.source_ini.parent / "certs", certs)
    # The previous key (published until retired): not the one signing.
    previous = next(
        path
        for path in certs.glob("*.crt")
        if path.read_bytes() != site.current_cert.read_bytes()
    )
    previous.unlink()
    previous.with_suffix(".key").unlink()
    ini = tmp_path / "test.ini"
    shutil.copy(site.source_ini, ini)
    set_settings(ini, {"idp.certs_dir": str(certs)})
    out = tmp_path / "out"
    out.mkdir()
    result = run(BACKUP, "--env-file", site.source_env, "--output", out, ini)
    refused(result, "has no certificate in")
    assert list(out.iterdir()) == []
