"""``idp-admin admin grant|revoke|list``: the first superadmin, and every
admin role, from the operator's shell."""

from __future__ import annotations

from sqlalchemy.orm import Session

from idp.models import AdminGrant
from tests.cli import NUMBER, add_user, fails, ok
from tests.factories import count, events


def test_the_operator_makes_the_first_superadmin(db, engine):
    assert add_user(db, "--print-password").returncode == 0
    assert "nobody holds an admin role" in ok(db, "admin", "list")
    out = ok(db, "admin", "grant", NUMBER, "SuperAdmin")
    assert out.startswith("XXXXXX-XX-5678 now has admin role superadmin\n")
    assert "takes effect once they turn two-step verification on" in out
    assert "already has admin role superadmin" in ok(
        db, "admin", "grant", NUMBER, "superadmin"
    )
    ok(db, "admin", "grant", NUMBER, "helpdesk")
    listed = ok(db, "admin", "list")
    assert "XXXXXX-XX-5678" in listed
    assert "helpdesk, superadmin  (two-step verification off)" in listed
    [first, _second] = events(engine, "admin.granted")
    assert first.detail == {"by": "idp-admin", "role": "superadmin"}
    assert first.actor_user_id is None
    # The shell may take the last superadmin's role (the console may not).
    assert "no longer has admin role superadmin" in ok(
        db, "admin", "revoke", NUMBER, "superadmin"
    )
    assert "did not have admin role superadmin; nothing changed" in ok(
        db, "admin", "revoke", NUMBER, "superadmin"
    )
    with Session(engine) as session:
        assert count(session, AdminGrant) == 1
    assert len(events(engine, "admin.revoked")) == 1


def test_admin_commands_refuse_bad_input_in_one_line(db, engine):
    assert add_user(db, "--print-password").returncode == 0
    assert "is not an admin role" in fails(db, "admin", "grant", NUMBER, "root")
    assert "no user with identity number" in fails(
        db, "admin", "grant", "900101-14-5679", "auditor"
    )
    assert "IDENTIFIER" in fails(db, "admin", "revoke", "12", "auditor")
    with Session(engine) as session:
        assert count(session, AdminGrant) == 0
