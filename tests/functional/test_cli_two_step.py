"""``idp-admin two-step``: the helpdesk turns off the second factor of someone
who lost both their phone and their recovery codes."""

from __future__ import annotations

import io
import sys

from sqlalchemy.orm import Session

from idp.cli.common import load_settings
from idp.models import RecoveryCode, TotpCredential
from tests.cli import NUMBER, add_user, admin, delivered, fails, ok, text_of, user_row
from tests.factories import count, events
from tests.two_step import Clock, enable


def test_the_helpdesk_turns_two_step_off(db, engine, tmp_path, monkeypatch):
    assert add_user(db, "--print-password").returncode == 0
    user = user_row(engine)
    assert "two-step verification off" in ok(db, "two-step", "status", NUMBER)
    assert "already off; nothing changed" in ok(db, "two-step", "off", NUMBER)
    with Session(engine) as session:
        enable(load_settings(str(db)), session, session.merge(user), Clock())
        session.commit()
    out = ok(db, "two-step", "status", NUMBER)
    assert out.strip() == (
        "XXXXXX-XX-5678: two-step verification on; 10 unused recovery code(s)"
    )
    # Asked first; "no" (or the end of input) changes nothing.
    for text in ("", "no\n"):
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))
        refused = admin(db, "two-step", "off", NUMBER)
        assert refused.returncode == 1
        assert refused.stderr == (
            "idp-admin: not confirmed (answer yes, or pass --yes); nothing changed\n"
        )
    with Session(engine) as session:
        assert count(session, TotpCredential) == 1
    monkeypatch.setattr(sys, "stdin", io.StringIO("yes\n"))
    out = ok(db, "two-step", "off", NUMBER)
    assert "turned two-step verification off for XXXXXX-XX-5678" in out
    with Session(engine) as session:
        assert count(session, TotpCredential) == 0
        assert count(session, RecoveryCode) == 0
    (event,) = events(engine, "two_step.disabled")
    assert event.detail == {"how": "helpdesk"} and event.actor_user_id is None
    notices = [m for m in delivered(db, tmp_path) if "off" in m["Subject"]]
    assert len(notices) == 1 and "helpdesk" in text_of(notices[0])
    assert "already off" in ok(db, "two-step", "off", NUMBER, "--yes")
    assert "no user with identity number" in fails(
        db, "two-step", "off", "900101-14-5679", "--yes"
    )
    assert "IDENTIFIER" in fails(db, "two-step", "status", "12")
