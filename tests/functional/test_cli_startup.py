"""What an operator meets first with idp-admin (issue 12 items 14 and 16).

On a scratch ini. Real processes where only a process shows it: what each
command imports before it works (start-up time is measured by
bench/bench_cli.py, not asserted here), a closed pipe, and pysaml2's
deprecation warning. A database that cannot be reached and a misspelt
setting are messages: those commands run through ``idp.cli.main``
(``tests.cli.admin``), which is what the console script calls.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.cli import IDP_ADMIN, admin, ok, run

pytestmark = pytest.mark.slow

HEAVY = ("saml2", "sqlalchemy", "pyramid", "alembic", "jinja2", "lxml")

PROBE = """
import json, sys
from idp.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exc:
    status = exc.code
loaded = sorted(
    name for name in sys.modules
    if name.split(".")[0] in {heavy!r} or name.startswith("idp.cli.")
)
print(json.dumps({{"status": status, "loaded": loaded}}), file=sys.stderr)
"""


def imported(*args) -> tuple[int, set[str]]:
    """Run idp-admin ARGS in a fresh interpreter; its status and heavy imports."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *map(str, args)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=120,
    )
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["status"], {name.split(".")[0] for name in report["loaded"]} | {
        name for name in report["loaded"] if name.startswith("idp.cli.")
    }


def test_help_imports_no_command_and_no_library():
    status, loaded = imported("--help")
    assert status == 0
    assert loaded == set()


def test_a_group_imports_only_its_own_module(ini):
    status, loaded = imported(ini, "db", "--help")
    assert status == 0
    assert {name for name in loaded if name.startswith("idp.cli.")} == {
        "idp.cli.db",
        "idp.cli.common",
    }
    assert "saml2" not in loaded


def test_database_commands_do_not_load_pysaml2(ini):
    ok(ini, "db", "upgrade")
    for command in (
        ("module", "list"),
        ("role", "list"),
        ("user", "show", "800101-14-5678"),
        ("sp", "list"),
        ("db", "check"),
        ("mail", "status"),
        ("audit", "tail"),
    ):
        status, loaded = imported(ini, *command)
        assert status in (0, 1), command
        assert "sqlalchemy" in loaded, command  # the control: it did its work
        assert "saml2" not in loaded, command


def test_a_closed_pipe_is_not_a_traceback(ini):
    """``idp-admin ... | head``: the reader leaves before the command writes."""
    ok(ini, "db", "upgrade")
    for args in (("--help",), (ini, "module", "list"), (ini, "db", "check")):
        with subprocess.Popen(
            [str(IDP_ADMIN), *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as process:
            process.stdout.close()
            stderr = process.stderr.read().decode()
            process.wait(timeout=120)
        assert stderr == "", args
    # The control: with the reader there, the output arrives.
    assert "no modules yet" in run(ini, "module", "list").stdout


def unreachable_ini(ini_path, tmp_path):
    """The scratch ini pointed at a PostgreSQL server that is not there."""
    text = ini_path.read_text().replace(
        f"sqlite:///{tmp_path / 'idp.sqlite'}",
        "postgresql+psycopg://idp:not-a-real-password@127.0.0.1:9/idp",
    )
    path = tmp_path / "unreachable.ini"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "command",
    [
        ("db", "check"),
        ("db", "upgrade"),
        ("module", "list"),
        ("user", "show", "800101-14-5678"),
        ("sp", "list"),
        ("mail", "status"),
        ("mail", "deliver"),
        ("audit", "verify"),
        ("audit", "tail"),
    ],
)
def test_database_errors_name_the_host_and_the_cause(ini, tmp_path, command):
    result = admin(unreachable_ini(ini, tmp_path), *command)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("idp-admin: "), line
    assert "the postgresql server at 127.0.0.1:9, database idp as idp" in line
    assert "refused" in line.lower()
    for secret_or_noise in ("not-a-real-password", "OperationalError", "Traceback"):
        assert secret_or_noise not in result.stderr


def test_a_misspelt_setting_stops_every_command_naming_it(ini, tmp_path):
    text = ini.read_text()
    typo = tmp_path / "typo.ini"
    typo.write_text(
        text.replace("idp.bcrypt_rounds =", "idp.bcrypt_round =").replace(
            "mail.sender =", "mail.hots = smtp.example.org\nmail.sender ="
        )
    )
    for command in (("db", "check"), ("module", "list"), ("sp", "list")):
        result = admin(typo, *command)
        assert result.returncode == 1
        assert result.stderr == (
            f"idp-admin: {typo}: unknown setting idp.bcrypt_round "
            "(did you mean idp.bcrypt_rounds?); unknown setting mail.hots "
            "(did you mean mail.host?)\n"
        )
    # The control: the ini it was made from works.
    ok(ini, "db", "upgrade")


def test_pysaml2_deprecation_warning_stays_off_the_console(ini):
    """Starting the app and exporting metadata load pysaml2: no warning printed."""
    ok(ini, "db", "upgrade")
    start = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pyramid.paster import get_app; get_app(sys.argv[1])",
            str(ini),
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=120,
    )
    assert start.returncode == 0, start.stderr
    export = run(ini, "metadata", "export", "-")
    assert export.returncode == 0, export.stderr
    assert export.stdout.startswith("<?xml")
    for stderr in (start.stderr, export.stderr):
        assert "Warning" not in stderr
        assert "CFB" not in stderr
