"""docs/deploy.md, run: ``deploy/rehearse`` does the installation, and holds every command.

The first test runs the script on PostgreSQL (the database the document
installs): from the shipped files to two nodes behind nginx over https, a
partner SP registered from its metadata, a new account's first sign-in and
single sign-on validated by a pysaml2 SP, a node taken out of service and
back, and everything stopped. The second reads every command in the
document's ``sh`` blocks (the installation and the sections after it; the
backup, restore and upgrade section has its own rehearsal,
``tests/functional/test_backup_restore.py``), maps the document's paths and
names to the rehearsal's with the table at the top of the script, and finds
each in the script: a command added to the document and not rehearsed fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.app import ROOT

SCRIPT = ROOT / "deploy" / "rehearse"
DOC = ROOT / "docs" / "deploy.md"
# Rehearsed elsewhere (tests/functional/test_backup_restore.py).
OTHERS = "## Backup, restore and upgrade"


def doc_commands(text: str) -> list[str]:
    """Every command of the ``sh`` blocks, continuation lines joined."""
    text = text.split(OTHERS, 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        joined = re.sub(r"\\\n\s*", "", block)
        commands += [
            line.strip()
            for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
    return commands


def mapping(script: str) -> list[tuple[str, str]]:
    return re.findall(r"(?m)^#map (.+?) => (.+)$", script)


def rehearsed(command: str, script: str) -> bool:
    """Whether ``command`` (already mapped) is a line, or part of one, of the script."""

    def bare(value: str) -> str:
        return re.sub(r"\s+", " ", value.replace('"', "").replace("'", "")).strip()

    wanted = bare(command)
    return any(
        wanted in bare(line) for line in script.splitlines() if not line.startswith("#")
    )


def test_every_command_of_the_document_is_in_the_rehearsal():
    script = SCRIPT.read_text()
    pairs = mapping(script)
    assert pairs, "the script's #map table"
    commands = doc_commands(DOC.read_text())
    assert len(commands) >= 40
    missing = []
    for command in commands:
        mapped = command
        for document, rehearsal in pairs:
            mapped = mapped.replace(document, rehearsal)
        if not rehearsed(mapped, script):
            missing.append(command)
    assert missing == []
    # The check can fail: a command the script does not run is found missing.
    assert not rehearsed("sudo idme-admin sp remove --yes partner", script)


def test_each_unit_command_is_the_documents():
    """The units' ExecStart= lines run the commands the document describes."""
    doc = DOC.read_text()
    for unit in (ROOT / "deploy" / "systemd").glob("*.service"):
        (exec_start,) = re.findall(r"(?m)^ExecStart=(.+)$", unit.read_text())
        program, config, *command = exec_start.split()
        assert program == "/opt/idme/.venv/bin/idp-admin"
        assert config == "/etc/idme/production.ini"
        described = " ".join(command).replace("127.0.0.1:%i", "127.0.0.1:PORT")
        assert described in doc.replace("\n", " "), described
        assert f"/opt/idme/deploy/systemd/{unit.name}" in doc


@pytest.fixture
def empty_database():
    """A new, empty PostgreSQL database beside the tests' own, dropped after."""
    base = os.environ.get("IDP_TEST_POSTGRESQL_URL")
    if not base:
        pytest.skip(
            "IDP_TEST_POSTGRESQL_URL is not set: the rehearsal needs PostgreSQL"
        )
    url = make_url(base)
    name = f"{url.database}_rehearse_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgresql
@pytest.mark.slow
def test_the_rehearsal_installs_two_nodes_and_signs_on_through_https(
    empty_database, tmp_path
):
    prefix = tmp_path / "root"
    # Its own process group: if it overran, every process it started (the
    # units, nginx, the SMTP sink) goes with it.
    process = subprocess.Popen(
        [
            "bash",
            str(SCRIPT),
            "--prefix",
            str(prefix),
            "--database-url",
            empty_database,
            "--venv",
            sys.prefix,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"the rehearsal took over 240 s:\n{stdout[-4000:]}{stderr[-4000:]}")
    result = subprocess.CompletedProcess(
        process.args, process.returncode, stdout, stderr
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    assert "sso ok: https://sp.partner.example/saml/metadata accepted" in out
    assert re.search(r"(?m)^ok +mail relay: ", out)
    assert "FAIL" not in out
    for unit in ("idme-deliver", "idme-refresh"):
        assert f"rehearse: {unit} stopped (exit status 0)" in out
    # Two nodes started, one taken out and back, both stopped: each stop
    # a graceful exit.
    assert out.count("rehearse: starting idme-web@") == 3
    assert (
        len(re.findall(r"rehearse: idme-web@\d+ stopped \(exit status 0\)", out)) == 3
    )
    assert "rehearse: done, everything stopped" in out
    # Nothing left running under the prefix.
    assert not list((prefix / "var" / "run").glob("*.pid"))
    # The installed secrets file kept its mode, and holds no example value.
    env = prefix / "etc" / "idme" / "idme.env"
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    assert not re.search(r"(?m)^IDP_\w+=.*CHANGE-ME", env.read_text())
    # nginx's access log holds no token or query string.
    log = (prefix / "var" / "log" / "nginx" / "idme-access.log").read_text()
    assert "SAMLRequest" not in log and "SAMLResponse" not in log
    assert not (prefix / "etc" / "nginx" / "sites-enabled" / "default").exists()


def test_the_rehearsal_refuses_bad_arguments_in_one_line(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    for args, message in [
        ([], "usage: deploy/rehearse"),
        (
            ["--prefix", "relative", "--database-url", "postgresql://x/y"],
            "absolute path",
        ),
        (
            ["--prefix", str(tmp_path / "used"), "--database-url", "postgresql://x/y"],
            "is not empty",
        ),
        (
            [
                "--prefix",
                str(tmp_path / "p"),
                "--database-url",
                "postgresql://x/y?a=1&b=2",
            ],
            "--database-url must hold no",
        ),
    ]:
        result = subprocess.run(
            ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30
        )
        assert result.returncode != 0
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
