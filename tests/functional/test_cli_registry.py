"""Registry changes from the shell: audited, unique whatever their case, safe to undo.

Issue 12 item 15. The README says each change to people, roles, modules and
service providers is audited; these walk the operator's commands one by one
and read the audit log back. Module codes and role names are unique whatever
their case, in the database itself; ``rename`` and ``delete`` exist, and a
delete is refused while something still uses the row, naming what; ``sp
remove`` says what goes with the SP and asks first.
"""

# The fixtures ini, db and engine: tests/conftest.py (tests/cli.py).

from __future__ import annotations

import datetime as dt
import io
import sys

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp.models import Module, PersistentNameId, Role, ServiceProvider, SpRegistryState
from tests.cli import add_user, admin, fails, ok, user_row
from tests.factories import events
from tests.saml_metadata import SP_ENTITY_ID, make_sp_metadata

pytestmark = [pytest.mark.slow, pytest.mark.postgresql]

EMIS = ("--name-ms", "Sistem Maklumat Murid", "--name-en", "Pupil Records")
GURU = ("--name-ms", "Guru", "--name-en", "Teacher")


def details(engine, name: str) -> list[dict]:
    return [event.detail for event in events(engine, name)]


def generation(engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(SpRegistryState.generation)) or 0


def test_module_and_role_changes_are_audited(db, engine):
    ok(db, "module", "create", "EMIS", *EMIS)
    ok(db, "role", "create", "guru", *GURU)
    ok(db, "role", "grant-module", "guru", "EMIS")
    ok(db, "role", "grant-module", "guru", "EMIS")  # already: nothing to audit
    ok(db, "role", "revoke-module", "guru", "EMIS")
    ok(db, "role", "revoke-module", "guru", "EMIS")  # nothing changed either
    ok(db, "module", "rename", "EMIS", "EMIS2")
    ok(db, "role", "rename", "guru", "pendidik")
    ok(db, "role", "delete", "pendidik")
    ok(db, "module", "delete", "EMIS2")

    by = {"by": "idp-admin"}
    assert details(engine, "module.created") == [
        {
            **by,
            "code": "EMIS",
            "name_ms": "Sistem Maklumat Murid",
            "name_en": "Pupil Records",
        }
    ]
    assert details(engine, "role.created") == [
        {**by, "name": "guru", "name_ms": "Guru", "name_en": "Teacher"}
    ]
    assert details(engine, "role.module_granted") == [
        {**by, "role": "guru", "module": "EMIS"}
    ]
    assert details(engine, "role.module_revoked") == [
        {**by, "role": "guru", "module": "EMIS"}
    ]
    assert details(engine, "module.renamed") == [{**by, "old": "EMIS", "new": "EMIS2"}]
    assert details(engine, "role.renamed") == [{**by, "old": "guru", "new": "pendidik"}]
    assert details(engine, "role.deleted") == [
        {**by, "name": "pendidik", "modules": []}
    ]
    assert details(engine, "module.deleted") == [{**by, "code": "EMIS2"}]
    assert "audit chain intact: 8 events" in ok(db, "audit", "verify")


def test_codes_are_unique_whatever_their_case(db, engine):
    ok(db, "module", "create", "EMIS", *EMIS)
    assert fails(db, "module", "create", "emis", *EMIS) == (
        "idp-admin: a module with code 'EMIS' already exists "
        "('emis' differs only in case)"
    )
    ok(db, "role", "create", "Guru", *GURU)
    assert fails(db, "role", "create", "GURU", *GURU) == (
        "idp-admin: a role named 'Guru' already exists ('GURU' differs only in case)"
    )
    # Found whatever the case, as they are unique whatever the case.
    assert "role Guru now grants module EMIS" in ok(
        db, "role", "grant-module", "guru", "emis"
    )
    # The controls: other codes are free.
    ok(db, "module", "create", "EMIS-2", *EMIS)
    ok(db, "role", "create", "guru-besar", *GURU)
    with Session(engine) as session:
        codes = session.scalars(select(Module.code).order_by(Module.code)).all()
        names = session.scalars(select(Role.name).order_by(Role.name)).all()
    assert (codes, names) == (["EMIS", "EMIS-2"], ["Guru", "guru-besar"])


@pytest.mark.parametrize(
    ("model", "key", "first", "variant"),
    [(Module, "code", "Kelas", "KELAS"), (Role, "name", "Murid", "mURID")],
)
def test_case_variants_are_refused_by_the_database(
    dbsession, model, key, first, variant
):
    """Two commands racing both pass the SELECT; the unique index stops the second."""
    names = {"display_name_ms": "x", "display_name_en": "x"}
    dbsession.add(model(**{key: first}, **names))
    dbsession.flush()
    with pytest.raises(IntegrityError), dbsession.begin_nested():
        dbsession.add(model(**{key: variant}, **names))
        dbsession.flush()
    # The control: another code inserts.
    dbsession.add(model(**{key: first + "2"}, **names))
    dbsession.flush()


def test_rename_keeps_codes_unique_and_may_change_only_the_case(db, engine):
    ok(db, "module", "create", "emis", *EMIS)
    ok(db, "module", "create", "spm", *EMIS)
    assert fails(db, "module", "rename", "spm", "EMIS") == (
        "idp-admin: a module with code 'emis' already exists "
        "('EMIS' differs only in case)"
    )
    assert "no module with code 'ghost'" in fails(db, "module", "rename", "ghost", "x")
    assert "renamed module emis to EMIS" in ok(db, "module", "rename", "emis", "EMIS")
    ok(db, "role", "create", "guru", *GURU)
    out = ok(db, "role", "rename", "guru", "Guru")
    assert "services now receive Guru instead of guru in isMemberOf" in out
    with Session(engine) as session:
        assert session.scalars(select(Module.code).order_by(Module.code)).all() == [
            "EMIS",
            "spm",
        ]
        assert session.scalars(select(Role.name)).all() == ["Guru"]
    assert len(events(engine, "module.renamed")) == 1


def test_delete_is_refused_while_in_use_and_names_what(db, engine, tmp_path):
    ok(db, "module", "create", "EMIS", *EMIS)
    ok(db, "role", "create", "guru", *GURU)
    ok(db, "role", "create", "pentadbir", *GURU)
    ok(db, "role", "grant-module", "guru", "EMIS")
    ok(db, "role", "grant-module", "pentadbir", "EMIS")
    metadata = tmp_path / "sp.xml"
    metadata.write_bytes(make_sp_metadata())
    ok(db, "sp", "import", metadata, "--module", "emis")
    assert add_user(db, "--role", "guru", "--print-password").returncode == 0

    assert fails(db, "module", "delete", "EMIS") == (
        "idp-admin: module EMIS is in use: granted by roles guru, pentadbir "
        "('role revoke-module' first); 1 SP belong to it: "
        f"{SP_ENTITY_ID} ('sp remove' or re-import with another --module)"
    )
    assert fails(db, "role", "delete", "guru") == (
        "idp-admin: role guru is in use: 1 user holds it ('user revoke' first)"
    )
    with Session(engine) as session:
        assert session.scalar(select(Module.code)) == "EMIS"
        assert len(session.scalars(select(Role)).all()) == 2
    assert events(engine, "module.deleted") == events(engine, "role.deleted") == []

    # Once nothing uses them, they go, and only they.
    out = ok(db, "role", "delete", "pentadbir")
    assert "deleted role pentadbir: Guru / Teacher" in out
    assert "it granted EMIS; those modules remain" in out
    ok(db, "user", "revoke", "900101-14-5678", "guru")
    ok(db, "role", "delete", "guru")
    ok(db, "sp", "remove", SP_ENTITY_ID, "--yes")
    assert "deleted module EMIS" in ok(db, "module", "delete", "emis")
    assert user_row(engine).identifier == "900101145678"
    with Session(engine) as session:
        assert session.scalars(select(Module)).all() == []


def test_sp_changes_are_audited_and_identical_reimport_is_unchanged(
    db, engine, tmp_path
):
    metadata = tmp_path / "sp.xml"
    metadata.write_bytes(make_sp_metadata())
    ok(db, "module", "create", "EMIS", *EMIS)
    out = ok(db, "sp", "import", metadata, "--module", "emis")
    assert out == f"registered {SP_ENTITY_ID} (module EMIS, enabled)\n"
    imported = details(engine, "sp.imported")
    assert [(d["entity_id"], d["module"], d["enabled"]) for d in imported] == [
        (SP_ENTITY_ID, "EMIS", True)
    ]

    # The same file again: nothing written, nothing audited, no node rebuilds.
    before = generation(engine)
    for extra in ((), ("--module", "EMIS")):
        out = ok(db, "sp", "import", metadata, *extra)
        assert out == f"unchanged {SP_ENTITY_ID} (module EMIS, enabled)\n"
    assert generation(engine) == before
    assert details(engine, "sp.updated") == []
    # The control: a changed file (a later validUntil) is an audited update.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    metadata.write_bytes(make_sp_metadata(valid_until=later))
    out = ok(db, "sp", "import", metadata)
    assert out == f"updated {SP_ENTITY_ID} (module EMIS, enabled)\n"
    assert generation(engine) == before + 1
    assert len(details(engine, "sp.updated")) == 1

    assert ok(db, "sp", "disable", SP_ENTITY_ID) == f"disabled {SP_ENTITY_ID}\n"
    assert ok(db, "sp", "disable", SP_ENTITY_ID) == "unchanged: already disabled\n"
    assert ok(db, "sp", "enable", SP_ENTITY_ID) == f"enabled {SP_ENTITY_ID}\n"
    by = {"by": "idp-admin", "entity_id": SP_ENTITY_ID}
    assert details(engine, "sp.disabled") == [by]
    assert details(engine, "sp.enabled") == [by]


def answer(monkeypatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


def test_sp_remove_says_what_it_deletes_and_asks_first(
    db, engine, tmp_path, monkeypatch
):
    metadata = tmp_path / "sp.xml"
    metadata.write_bytes(make_sp_metadata())
    ok(db, "sp", "import", metadata)
    assert add_user(db, "--print-password").returncode == 0
    user_id = user_row(engine).id
    with Session(engine) as session, session.begin():
        # What a sign-in at the SP leaves behind (tests/functional/test_sso.py
        # walks that flow; here only its row matters).
        sp_id = session.scalar(select(ServiceProvider.id))
        session.add(PersistentNameId(user_id=user_id, sp_id=sp_id, name_id="a" * 32))

    for text in ("", "no\n", "\n"):
        answer(monkeypatch, text)
        result = admin(db, "sp", "remove", SP_ENTITY_ID)
        assert result.returncode == 1
        assert result.stderr == (
            "idp-admin: not removed: not confirmed (answer yes, or pass --yes)\n"
        )
        assert result.stdout.startswith(
            f"This deletes the registration of {SP_ENTITY_ID} (module -, enabled) "
            "and its policy\n  1 persistent NameID: registered again, the service "
            "would get new ones and not recognise its users\n"
            f"Remove {SP_ENTITY_ID}? Type yes to confirm: "
        )
    with Session(engine) as session:
        assert session.scalar(select(ServiceProvider.entity_id)) == SP_ENTITY_ID
    assert events(engine, "sp.removed") == []

    answer(monkeypatch, "yes\n")
    result = admin(db, "sp", "remove", SP_ENTITY_ID)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(
        f"removed the registration of {SP_ENTITY_ID} (module -, enabled) and its "
        "policy\n  1 persistent NameID: registered again, the service would get "
        "new ones and not recognise its users\n"
    )
    with Session(engine) as session:
        assert session.scalars(select(ServiceProvider)).all() == []
        assert session.scalars(select(PersistentNameId)).all() == []
    (removed,) = details(engine, "sp.removed")
    assert removed["entity_id"] == SP_ENTITY_ID
    assert len(removed["deleted"]) == 2


def test_a_grant_racing_a_delete_is_refused_not_cascaded_away(db_engine):
    """``module delete`` checks, then deletes: a grant made in between must fail.

    Without the row lock, PostgreSQL lets the grant commit after the check
    and the delete's ON DELETE CASCADE then drops it silently. With it, the
    grant waits for the delete and is refused by the foreign key. (SQLite
    runs one writer at a time, so there the grant always waits.)
    """
    import threading

    from sqlalchemy import delete

    from idp.cli.modules import _locked
    from idp.models.role import role_modules

    names = {"display_name_ms": "x", "display_name_en": "x"}
    with Session(db_engine) as session, session.begin():
        module, role = Module(code="RACE", **names), Role(name="race", **names)
        session.add_all([module, role])
        session.flush()
        module_id, role_id = module.id, role.id
    outcome = {}

    def grant():
        try:
            with db_engine.begin() as conn:
                conn.execute(
                    role_modules.insert().values(role_id=role_id, module_id=module_id)
                )
            outcome["grant"] = "committed"
        except IntegrityError:
            outcome["grant"] = "refused"

    racer = threading.Thread(target=grant)
    try:
        with Session(db_engine) as session, session.begin():
            module = _locked(session, session.get(Module, module_id))
            assert module.roles == []  # the check: nothing uses it
            racer.start()
            racer.join(timeout=1.5)
            assert racer.is_alive(), "the grant did not wait for the delete"
            session.delete(module)
        racer.join(timeout=30)
        assert outcome == {"grant": "refused"}
    finally:
        racer.join(timeout=30)
        with db_engine.begin() as conn:
            conn.execute(delete(role_modules).where(role_modules.c.role_id == role_id))
            conn.execute(delete(Role.__table__).where(Role.id == role_id))
            conn.execute(delete(Module.__table__).where(Module.id == module_id))
