"""``idp-admin doctor``: one line per check, and each check fails for its reason.

Every test starts from a sound scratch install (database upgraded, a key
pair made) whose doctor says ``ok`` or ``warn`` throughout, then breaks
one thing and reads that check's ``FAIL`` line and the exit status.
"""

from __future__ import annotations

import datetime as dt
import os
import re

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

import idp.cli.doctor
import idp.saml.libraries
import idp.saml.selftest
from idp.models import MetadataSource
from idp.saml.keys import make_pem_pair
from tests.cli import admin, ok, set_settings
from tests.smtp import PASSWORD, SMTPServer, free_port, make_certificate

LINE = re.compile(r"^(ok  |warn|FAIL) [a-z ]+: \S.*$")
CHECKS = (
    "settings",
    "libraries",
    "verifier",
    "keys",
    "database",
    "clock",
    "metadata sources",
    "mail relay",
)


@pytest.fixture
def install(db):
    """The scratch install with its key pair: the doctor's healthy patient."""
    ok(db, "keys", "generate")
    return db


def run_doctor(ini) -> tuple[int, dict[str, str]]:
    """The exit status and each check's line (status and text), by name."""
    result = admin(ini, "doctor")
    lines = result.stdout.splitlines()
    assert lines and all(LINE.match(line) for line in lines), result.stdout
    assert result.stderr == "", result.stderr
    by_name = {}
    for line in lines:
        status, rest = line[:4].strip(), line[5:]
        name, detail = rest.split(": ", 1)
        by_name[name] = f"{status} {detail}"
    return result.returncode, by_name


def failing(ini, check: str) -> str:
    """What ``check``'s FAIL line says; the run exits 1."""
    code, lines = run_doctor(ini)
    assert code == 1, lines
    assert lines[check].startswith("FAIL "), lines
    return lines[check][5:]


def test_a_sound_install_passes_every_check(install):
    code, lines = run_doctor(install)
    assert code == 0, lines
    assert tuple(lines) == CHECKS
    assert all(not line.startswith("FAIL") for line in lines.values())
    assert lines["database"].startswith("ok ")
    assert lines["keys"].startswith("ok current signing.key")


def test_doctor_help_is_fast_and_named_in_the_list():
    from idp.cli import COMMANDS

    assert COMMANDS["doctor"].module == "idp.cli.doctor"
    assert COMMANDS["doctor"].help == idp.cli.doctor.HELP


def test_settings_that_do_not_parse_fail_and_the_rest_is_skipped(install):
    set_settings(install, {"idp.bcrypt_rounds": "3"})
    code, lines = run_doctor(install)
    assert code == 1
    assert lines["settings"].startswith("FAIL idp.bcrypt_rounds: must be between")
    assert "libraries" in lines and "database" not in lines


def test_production_settings_that_weaken_a_defence_fail(install, monkeypatch):
    monkeypatch.setenv("IDP_SESSION_SECRET", "s" * 48)
    monkeypatch.setenv("IDP_HMAC_KEY", "h" * 48)
    set_settings(
        install,
        {
            "idp.environment": "production",
            "idp.base_url": "https://idp.test",
            "idp.auto_create_keys": "false",
            "idp.metadata_fetch_allow_http": "false",
            "idp.bcrypt_rounds": "12",
            "captcha.enabled": "false",
        },
    )
    assert "captcha.enabled = false" in failing(install, "settings")
    # Control: the captcha on, the same settings are only cautioned about.
    set_settings(install, {"captcha.enabled": "true"})
    code, lines = run_doctor(install)
    assert lines["settings"].startswith("warn "), lines
    assert "SQLite: one node only" in lines["settings"]
    assert code == 0, lines


def test_xmlsec_and_lxml_on_different_libxml2_fail(install, monkeypatch):
    real = idp.saml.libraries.versions()
    monkeypatch.setattr(
        idp.saml.libraries,
        "versions",
        lambda: {**real, "libxml2 (lxml)": "2.9.1"},
    )
    assert "different libxml2" in failing(install, "libraries")


def test_a_verifier_that_accepts_tampering_fails(install, monkeypatch):
    """OPS-07: the doctor runs the verifier's self-test too."""

    def accept_all():
        raise idp.saml.selftest.VerifierSelfTestError(
            "the verifier accepted a document whose signed content was altered"
        )

    monkeypatch.setattr(idp.saml.selftest, "self_test", accept_all)
    assert "accepted a document" in failing(install, "verifier")


def test_a_key_readable_by_others_fails(install, tmp_path):
    (tmp_path / "certs" / "signing.key").chmod(0o644)
    assert "readable by other" in failing(install, "keys")


def test_a_certs_folder_others_may_write_fails(install, tmp_path):
    (tmp_path / "certs").chmod(0o777)
    assert "certs is writable by others (mode 0777)" in failing(install, "keys")


def test_a_key_owned_by_another_user_fails(install, tmp_path):
    key = tmp_path / "certs" / "signing.key"
    if os.geteuid() != 0:
        pytest.skip("only root can give a file away")
    os.chown(key, 4242, -1)
    assert "owned by uid 4242, not by the service user" in failing(install, "keys")


def test_a_key_that_does_not_match_its_certificate_fails(install, tmp_path):
    other_key, _cert = make_pem_pair("other.test", key_size=2048)
    key = tmp_path / "certs" / "signing.key"
    key.write_bytes(other_key)
    assert "does not match" in failing(install, "keys")


def test_a_database_without_the_newest_migration_fails(install, engine):
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE alembic_version SET version_num = '0014_metadata_sources'")
        )
    detail = failing(install, "database")
    assert "at 0014_metadata_sources, the newest is" in detail
    assert "db upgrade" in detail


def test_an_unreachable_database_fails_without_its_password(install):
    set_settings(
        install,
        {
            "sqlalchemy.url": f"postgresql+psycopg://idp:s3cret-pw@127.0.0.1:{free_port()}/idp"
        },
    )
    code, lines = run_doctor(install)
    assert code == 1
    assert lines["database"].startswith("FAIL the postgresql server at 127.0.0.1:"), (
        lines["database"]
    )
    assert "is unreachable: " in lines["database"]
    assert "s3cret-pw" not in "".join(lines.values())
    assert lines["clock"].startswith("warn not checked")


def test_a_clock_off_by_more_than_two_seconds_fails(install, monkeypatch):
    real = idp.cli.doctor._local_now
    monkeypatch.setattr(
        idp.cli.doctor, "_local_now", lambda: real() + dt.timedelta(seconds=2.5)
    )
    assert "2.5" in failing(install, "clock")
    # Control: 1.5 s is within bounds.
    monkeypatch.setattr(
        idp.cli.doctor, "_local_now", lambda: real() + dt.timedelta(seconds=1.5)
    )
    assert run_doctor(install)[1]["clock"].startswith("ok ")


def test_an_expired_metadata_source_fails(install, engine):
    now = dt.datetime.now(dt.UTC)
    with Session(engine) as session, session.begin():
        session.add(
            MetadataSource(
                name="federation",
                kind="url",
                location="https://federation.example/md.xml",
                fetched_at=now - dt.timedelta(days=3),
                valid_until=now - dt.timedelta(hours=1),
                next_refresh_at=now + dt.timedelta(hours=1),
            )
        )
    assert "federation: its copy expired" in failing(install, "metadata sources")


def test_a_metadata_source_nobody_refreshes_is_a_warning(install, engine):
    now = dt.datetime.now(dt.UTC)
    with Session(engine) as session, session.begin():
        session.add(
            MetadataSource(
                name="federation",
                kind="url",
                location="https://federation.example/md.xml",
                fetched_at=now - dt.timedelta(days=3),
                valid_until=now + dt.timedelta(days=3),
                next_refresh_at=now - dt.timedelta(hours=2),
            )
        )
    code, lines = run_doctor(install)
    assert code == 0
    assert lines["metadata sources"].startswith("warn federation: refresh overdue")


@pytest.fixture
def relay(tmp_path):
    server = SMTPServer(*make_certificate(tmp_path), implicit_tls=False)
    server.start()
    yield server
    server.stop()


def relay_settings(server: SMTPServer) -> dict[str, str]:
    return {
        name: str(value)
        for name, value in server.settings().items()
        if name != "mail.timeout"
    }


def test_the_mail_relay_answers_ehlo_starttls_and_sign_in(install, relay):
    set_settings(install, relay_settings(relay))
    code, lines = run_doctor(install)
    assert code == 0, lines
    assert lines["mail relay"] == (
        f"ok 127.0.0.1:{relay.port} answered (EHLO, STARTTLS, signed in as idme)"
    )
    assert relay.messages == []  # nothing sent


def test_a_mail_relay_that_is_down_or_refuses_the_password_fails(install, relay):
    set_settings(install, {**relay_settings(relay), "mail.smtp_password": "wrong"})
    assert "cannot connect to 127.0.0.1" in failing(install, "mail relay")
    relay.stop()
    set_settings(install, {"mail.smtp_password": PASSWORD})
    detail = failing(install, "mail relay")
    assert f"cannot connect to 127.0.0.1:{relay.port}" in detail
