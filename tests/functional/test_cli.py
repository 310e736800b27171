"""idp-admin as an operator runs it, on a real ini.

The console script is started as a real process where the process is what is
tested: ``--help``, a missing configuration file's exit status, the delivery
loop stopped by a signal. The other commands run through ``idp.cli.main``
(``tests.cli.admin``), the function the console script calls, with their
output captured: a process per command spends a second or two importing
before it does anything.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from lxml import etree

from tests.cli import IDP_ADMIN, admin, ok, queue_one_message, run

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for word in ("db", "keys", "mail", "metadata"):
        assert word in result.stdout
    for group in ("db", "keys", "mail", "metadata"):
        result = admin("x.ini", group, "--help")
        assert result.returncode == 0, result.stderr


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from idp.migrations import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_db_upgrade_then_check(ini):
    result = admin(ini, "db", "check")
    assert result.returncode == 1
    assert "db upgrade" in result.stderr
    result = admin(ini, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert f"database at revision {head_revision()}" in result.stdout
    result = admin(ini, "db", "check")
    assert result.returncode == 0, result.stderr
    assert "matches the models" in result.stdout


def test_keys_generate_refuses_to_replace_without_force(ini, tmp_path):
    result = admin(ini, "keys", "generate")
    assert result.returncode == 0, result.stderr
    key = tmp_path / "certs" / "signing.key"
    assert key.stat().st_mode & 0o777 == 0o600
    first = key.read_bytes()
    result = admin(ini, "keys", "generate")
    assert result.returncode == 1
    assert "already exists" in result.stderr
    assert "Traceback" not in result.stderr
    assert key.read_bytes() == first
    result = admin(ini, "keys", "generate", "--force")
    assert result.returncode == 0
    assert key.read_bytes() != first


def test_metadata_export_writes_signed_metadata(ini, tmp_path):
    assert admin(ini, "keys", "generate").returncode == 0
    result = admin(ini, "metadata", "export")
    assert result.returncode == 0, result.stderr
    exported = tmp_path / "metadata" / "idp-metadata.xml"
    doc = etree.fromstring(exported.read_bytes())
    assert doc.get("entityID") == "http://127.0.0.1:6543/saml/metadata"
    assert doc.find("{http://www.w3.org/2000/09/xmldsig#}Signature") is not None
    target = tmp_path / "out.xml"
    assert admin(ini, "metadata", "export", target).returncode == 0
    assert target.read_bytes().startswith(b"<?xml")


def test_metadata_export_without_keys_fails_clearly(tmp_path, monkeypatch):
    text = (
        (ROOT / "production.ini")
        .read_text()
        .replace("%(here)s/certs", str(tmp_path / "none"))
    )
    ini = tmp_path / "prod.ini"
    ini.write_text(text)
    monkeypatch.setenv("IDP_SESSION_SECRET", "s" * 40)
    monkeypatch.setenv("IDP_HMAC_KEY", "h" * 40)
    result = admin(ini, "metadata", "export", "-")
    assert result.returncode == 1
    assert "signing.key is missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_is_a_one_line_error(tmp_path):
    result = run(tmp_path / "missing.ini", "db", "upgrade")
    assert result.returncode == 1
    assert "no such configuration file" in result.stderr
    assert "Traceback" not in result.stderr


def test_production_with_development_secrets_refuses(tmp_path, monkeypatch):
    """DATA-06: the CLI, like the app, refuses development secrets in production."""
    ini = tmp_path / "prod.ini"
    ini.write_text((ROOT / "production.ini").read_text())
    monkeypatch.setenv(
        "IDP_SESSION_SECRET", "development-only-session-secret-0123456789abcdef"
    )
    monkeypatch.setenv("IDP_HMAC_KEY", "h" * 40)
    result = admin(ini, "db", "check")
    assert result.returncode == 1
    assert "idp.session_secret: the development value" in result.stderr
    assert "Traceback" not in result.stderr


def test_mail_deliver_writes_eml_files_in_development(ini, tmp_path):
    from email import message_from_bytes, policy

    assert admin(ini, "db", "upgrade").returncode == 0
    queue_one_message(ini)
    assert admin(ini, "mail", "status").stdout.startswith(
        "queued 1 (failing 0), sent 0"
    )

    result = admin(ini, "mail", "deliver")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "sent 1, failed 0\n"
    (eml,) = (tmp_path / "mail").glob("*.eml")
    message = message_from_bytes(eml.read_bytes(), policy=policy.SMTP)
    assert message["To"] == "ali@example.com.my"
    assert message["Subject"].startswith("Seseorang cuba mendaftar")
    assert admin(ini, "mail", "status").stdout == "queued 0 (failing 0), sent 1\n"
    assert admin(ini, "mail", "deliver").stdout == "sent 0, failed 0\n"


def test_mail_deliver_with_smtp_down_fails_and_keeps_the_message(ini):
    """DATA-04: an unreachable SMTP server is reported; the message stays queued."""
    from tests.smtp import free_port

    text = ini.read_text().replace(
        "mail.backend = idp.services.delivery.FileSender",
        "mail.backend = idp.services.delivery.SMTPSender\n"
        f"mail.host = 127.0.0.1\nmail.port = {free_port()}\nmail.security = none",
    )
    ini.write_text(text)
    assert admin(ini, "db", "upgrade").returncode == 0
    queue_one_message(ini)
    result = admin(ini, "mail", "deliver")
    assert result.returncode == 1
    assert result.stdout == "sent 0, failed 1\n"
    assert "Traceback" not in result.stderr
    assert admin(ini, "mail", "status").stdout.startswith(
        "queued 1 (failing 1), sent 0"
    )


def test_mail_deliver_loop_sends_until_stopped(ini, tmp_path):
    import signal
    import time

    ok(ini, "db", "upgrade")
    text = ini.read_text().replace("mail.poll_seconds = 2", "mail.poll_seconds = 1")
    ini.write_text(text)
    process = subprocess.Popen(
        [str(IDP_ADMIN), str(ini), "mail", "deliver", "--loop"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        queue_one_message(ini)
        deadline = time.monotonic() + 30
        while not list((tmp_path / "mail").glob("*.eml")):
            assert time.monotonic() < deadline, "the loop did not deliver"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "sent 1, failed 0" in out
