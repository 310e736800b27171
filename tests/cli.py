"""``idp-admin`` as an operator runs it, on a scratch ini.

``scratch_ini`` copies development.ini with every path it writes (database,
keys, metadata, mail) moved into a scratch folder and the slow settings
turned down; the ``ini`` fixture (tests/conftest.py) gives each test one,
``db`` the same with its database upgraded, ``engine`` an engine on it.

``run`` starts the console script as a real process. ``admin`` runs the
command in this process through ``idp.cli.main`` with its output captured,
for the many tests of the commands themselves: a process per command spends
two seconds importing and starting before doing anything. ``ok``, ``fails``,
``add_user`` and the readers below are built on ``admin``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models import ServiceProvider, User
from tests.app import DEVELOPMENT_INI

IDP_ADMIN = Path(sys.executable).parent / "idp-admin"
# The user add_user makes, as typed.
NUMBER = "900101-14-5678"


def scratch_ini(folder: Path) -> Path:
    """development.ini pointed at scratch folders under ``folder``."""
    text = DEVELOPMENT_INI.read_text()
    text = text.replace("%(here)s/var/idp.sqlite", str(folder / "idp.sqlite"))
    text = text.replace("%(here)s/certs", str(folder / "certs"))
    text = text.replace("%(here)s/metadata", str(folder / "metadata"))
    text = text.replace("%(here)s/var/mail", str(folder / "mail"))
    text = text.replace("idp.key_size = 3072", "idp.key_size = 2048")
    text = text.replace("idp.bcrypt_rounds = 12", "idp.bcrypt_rounds = 4")
    path = folder / "test.ini"
    path.write_text(text)
    return path


def run(*args, env=None) -> subprocess.CompletedProcess:
    """``idp-admin ARGS`` in its own process; ``env`` adds to the environment."""
    return subprocess.run(
        [str(IDP_ADMIN), *map(str, args)],
        capture_output=True,
        stdin=subprocess.DEVNULL,  # a command that asks gets end of input
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def admin(*args) -> subprocess.CompletedProcess:
    """``idp-admin ARGS`` in this process; its exit status and what it printed."""
    from idp import cli

    argv = [str(arg) for arg in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    result = subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
    assert "Traceback" not in result.stderr, result.stderr
    return result


def ok(*args) -> str:
    """What a command that must succeed printed."""
    result = admin(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def fails(*args) -> str:
    """The one-line error of a command that must fail."""
    result = admin(*args)
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "no error message"
    return lines[-1]


def add_user_arguments(number=NUMBER, email="ali@example.com.my") -> list[str]:
    """``user add``'s arguments for Ali bin Abu, an educator (any release's CLI)."""
    return [
        "user",
        "add",
        number,
        "--name",
        "Ali bin Abu",
        "--email",
        email,
        "--phone",
        "012-345 6789",
        "--category",
        "educator",
        "--institution",
        "SK Putrajaya",
    ]


def add_user(ini, *extra, number=NUMBER, email="ali@example.com.my"):
    """``user add`` for Ali bin Abu, an educator; ``extra`` options appended."""
    return admin(ini, *add_user_arguments(number, email), *extra)


def printed_password(stdout: str) -> str:
    """The temporary password ``user add --print-password`` printed."""
    match = re.search(r"^temporary password: (\S+)$", stdout, re.M)
    assert match, stdout
    return match.group(1)


def user_row(engine, number: str = "900101145678") -> User:
    """The user with identity ``number`` (normalised), detached from its session."""
    with Session(engine) as session:
        user = session.scalars(select(User).where(User.identifier == number)).one()
        session.expunge(user)
        return user


def delivered(ini, tmp_path) -> list:
    """``mail deliver``, then every message written under ``tmp_path``/mail."""
    ok(ini, "mail", "deliver")
    return [
        message_from_bytes(path.read_bytes(), policy=policy.SMTP)
        for path in sorted((tmp_path / "mail").glob("*.eml"))
    ]


def text_of(message) -> str:
    """The plain-text body of an email message."""
    return message.get_body(preferencelist=("plain",)).get_content()


def assert_refused(result, message: str) -> None:
    """A command refused in one line on stderr naming ``message``, exit 1."""
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("idp-admin: "), result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def rows(engine) -> dict[str, ServiceProvider]:
    """The registered SPs in the scratch database, by entity ID."""
    with Session(engine, expire_on_commit=False) as session:
        sps = session.scalars(select(ServiceProvider)).all()
        return {sp.entity_id: sp for sp in sps}


def queue_one_message(ini: Path, recipient: str = "ali@example.com.my") -> None:
    """Queue a message exactly as the app does, through the outbox service."""
    from pyramid.paster import get_appsettings

    from idp.db import make_engine
    from idp.services.mail import Composer, Outbox, OutboxCodec
    from idp.settings import parse_settings

    settings = parse_settings(get_appsettings(str(ini), name="main"))
    engine = make_engine(settings)
    with Session(engine) as session, session.begin():
        outbox = Outbox(
            session, Composer(settings), OutboxCodec(settings["idp.hmac_key"])
        )
        outbox.add(
            "already-registered",
            recipient=recipient,
            locale="ms",
            context={"full_name": "Ali bin Abu", "identifier": "XXXXXX-XX-1234"},
        )
    engine.dispose()


def set_settings(ini: Path, values: dict[str, str]) -> None:
    """Set ``[app:main]`` settings in ``ini``: each line replaced, or added."""
    text = ini.read_text()
    for name, value in values.items():
        line = f"{name} = {value}"
        pattern = re.compile(rf"^{re.escape(name)} *=.*$", re.M)
        if pattern.search(text):
            text = pattern.sub(lambda _match, line=line: line, text, count=1)
        else:
            text = text.replace("[app:main]\n", f"[app:main]\n{line}\n", 1)
    ini.write_text(text)
