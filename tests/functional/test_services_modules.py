"""ModuleRegistry: the rules of modules and roles, whichever front end calls.

``idp-admin module|role`` (tests/functional/test_cli_registry.py) and the
admin console call the same service; these tests call it as the console
will, with an actor that has a user id and an address, and check the rule,
the audit event with that actor, the refusal, and that a refusal leaves
nothing behind even for a caller that catches it and carries on to commit.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from idp.models import AuditEvent, Module, Role
from idp.services.actor import Actor
from idp.services.errors import Conflict, Invalid, NotFound
from idp.services.interfaces import IModuleRegistry
from tests.factories import count, make_module, make_role, make_user
from tests.saml_metadata import make_sp_metadata
from tests.services import CONSOLE, audited

NAMES = {"name_ms": "Sistem Maklumat Murid", "name_en": "Pupil Records"}


@pytest.fixture
def registry(service):
    return service(IModuleRegistry)


def snapshot(dbsession) -> tuple:
    """Everything a module or role operation could write."""
    from idp.models.role import role_modules, user_roles

    return (
        sorted(dbsession.scalars(select(Module.code))),
        sorted(dbsession.scalars(select(Role.name))),
        sorted(dbsession.execute(select(role_modules)).all()),
        sorted(dbsession.execute(select(user_roles.c.role_id)).all()),
        count(dbsession, AuditEvent),
    )


def test_each_change_is_audited_with_who_and_from_where(registry, dbsession):
    registry.create_module("emis", **NAMES, actor=CONSOLE)
    registry.create_role("guru", name_ms="Guru", name_en="Teacher", actor=CONSOLE)
    assert registry.grant_module("GURU", "EMIS", actor=CONSOLE) is True
    assert registry.grant_module("guru", "emis", actor=CONSOLE) is False
    assert registry.revoke_module("guru", "emis", actor=CONSOLE) is True
    assert registry.revoke_module("guru", "emis", actor=CONSOLE) is False
    assert registry.rename_module("emis", "emis2", actor=CONSOLE) == "emis"
    assert registry.rename_role("guru", "pendidik", actor=CONSOLE) == "guru"
    assert registry.delete_role("pendidik", actor=CONSOLE).key == "pendidik"
    assert registry.delete_module("emis2", actor=CONSOLE).key == "emis2"

    who = {"by": "admin-console"}
    expected = {
        "module.created": {
            **who,
            "code": "emis",
            "name_ms": NAMES["name_ms"],
            "name_en": NAMES["name_en"],
        },
        "role.created": {
            **who,
            "name": "guru",
            "name_ms": "Guru",
            "name_en": "Teacher",
        },
        "role.module_granted": {**who, "role": "guru", "module": "emis"},
        "role.module_revoked": {**who, "role": "guru", "module": "emis"},
        "module.renamed": {**who, "old": "emis", "new": "emis2"},
        "role.renamed": {**who, "old": "guru", "new": "pendidik"},
        "role.deleted": {**who, "name": "pendidik", "modules": []},
        "module.deleted": {**who, "code": "emis2"},
    }
    for event, detail in expected.items():
        assert audited(dbsession, event) == [
            (detail, CONSOLE.user_id, CONSOLE.address, None)
        ], event
    assert count(dbsession, AuditEvent) == len(expected)


def test_the_command_line_actor_is_recorded_as_before(registry, dbsession):
    registry.create_module("emis", **NAMES, actor=Actor.command_line())
    ((detail, actor, address, _),) = audited(dbsession, "module.created")
    assert detail["by"] == "idp-admin"
    assert (actor, address) == (None, None)


@pytest.mark.parametrize("taken", ["EMIS", "emis", "Emis"])
def test_data_02_a_code_differing_only_in_case_is_refused(registry, dbsession, taken):
    """DATA-02: "EMIS" and "emis" would be two modules nobody can tell apart."""
    registry.create_module("EMIS", **NAMES, actor=CONSOLE)
    registry.create_role("guru", name_ms="Guru", name_en="Teacher", actor=CONSOLE)
    before = snapshot(dbsession)
    with pytest.raises(Conflict) as refused:
        registry.create_module(taken, **NAMES, actor=CONSOLE)
    assert refused.value.code == "module.taken"
    assert refused.value.params == {"key": taken, "existing": "EMIS"}
    with pytest.raises(Conflict) as refused:
        registry.create_role(
            taken.lower().replace("emis", "GURU"), **NAMES, actor=CONSOLE
        )
    assert refused.value.code == "role.taken"
    registry.create_module("spm", **NAMES, actor=CONSOLE)
    before = snapshot(dbsession)
    with pytest.raises(Conflict) as refused:
        registry.rename_module("spm", taken, actor=CONSOLE)
    assert "differs only in case" in str(refused.value) or taken == "EMIS"
    assert snapshot(dbsession) == before
    # The control: another code is free.
    registry.create_module("EMIS-2", **NAMES, actor=CONSOLE)


def test_a_module_in_use_is_refused_naming_its_uses(registry, dbsession):
    from idp.saml.registry import import_sp

    module = make_module(dbsession, "emis")
    make_role(dbsession, "guru", module)
    make_role(dbsession, "pentadbir", module)
    import_sp(dbsession, make_sp_metadata(), module_code="emis")
    before = snapshot(dbsession)
    with pytest.raises(Conflict) as refused:
        registry.delete_module("EMIS", actor=CONSOLE)
    assert refused.value.code == "module.in_use"
    uses = refused.value.params["uses"]
    assert uses["roles"] == "granted by roles guru, pentadbir"
    assert uses["service_providers"].startswith("1 SP belong to it: https://")
    assert snapshot(dbsession) == before
    # The control: once nothing uses it, it goes.
    for role in ("guru", "pentadbir"):
        registry.revoke_module(role, "emis", actor=CONSOLE)
    from idp.models import ServiceProvider

    dbsession.delete(dbsession.scalars(select(ServiceProvider)).one())
    assert registry.delete_module("emis", actor=CONSOLE).key == "emis"


def test_a_role_someone_holds_is_refused(registry, dbsession):
    role = make_role(dbsession, "guru", make_module(dbsession, "emis"))
    user = make_user(dbsession)
    user.roles.append(role)
    dbsession.flush()
    before = snapshot(dbsession)
    with pytest.raises(Conflict) as refused:
        registry.delete_role("guru", actor=CONSOLE)
    assert (refused.value.code, refused.value.params) == (
        "role.in_use",
        {"role": "guru", "holders": 1},
    )
    assert str(refused.value) == "role guru is in use: 1 user holds it"
    assert snapshot(dbsession) == before
    user.roles.remove(role)
    deleted = registry.delete_role("guru", actor=CONSOLE)
    assert deleted.modules == ["emis"]
    assert count(dbsession, Module) == 1  # the modules it granted remain


@pytest.mark.parametrize(
    ("values", "field", "code"),
    [
        ({"name_ms": "  "}, "name_ms", "text.empty"),
        ({"name_en": "Pupil\nRecords"}, "name_en", "text.control_characters"),
        # A right-to-left override makes a name read otherwise than it is.
        ({"name_en": "Pupil \u202edrocer"}, "name_en", "text.control_characters"),
        ({"name_ms": "x" * 201}, "name_ms", "text.too_long"),
    ],
)
def test_web_06_display_names_are_one_clean_line(
    registry, dbsession, values, field, code
):
    before = snapshot(dbsession)
    with pytest.raises(Invalid) as refused:
        registry.create_module("emis", **{**NAMES, **values}, actor=CONSOLE)
    assert (refused.value.field, refused.value.code) == (field, code)
    assert snapshot(dbsession) == before
    # Runs of spaces are collapsed, not refused (the control).
    module = registry.create_module(
        "emis", name_ms="Sistem   Maklumat", name_en="x" * 200, actor=CONSOLE
    )
    assert module.display_name_ms == "Sistem Maklumat"


@pytest.mark.parametrize("code", ["", "-emis", "emis murid", "e" * 65, "emis\u00e9"])
def test_codes_are_what_saml_attributes_carry(registry, dbsession, code):
    with pytest.raises(Invalid) as refused:
        registry.create_module(code, **NAMES, actor=CONSOLE)
    assert refused.value.code == "code.invalid"
    with pytest.raises(Invalid):
        registry.create_role(code, **NAMES, actor=CONSOLE)
    assert count(dbsession, AuditEvent) == 0


def test_unknown_names_and_renaming_to_itself(registry, dbsession):
    make_role(dbsession, "guru", make_module(dbsession, "emis"))
    for call, code in (
        (lambda: registry.find_role("ghost"), "role.not_found"),
        (lambda: registry.find_module("ghost"), "module.not_found"),
        (
            lambda: registry.grant_module("ghost", "emis", actor=CONSOLE),
            "role.not_found",
        ),
        (lambda: registry.delete_module("ghost", actor=CONSOLE), "module.not_found"),
    ):
        with pytest.raises(NotFound) as refused:
            call()
        assert refused.value.code == code
    with pytest.raises(Conflict) as refused:
        registry.rename_role("guru", "guru", actor=CONSOLE)
    assert refused.value.code == "role.same_name"
    # Only the case: allowed, since it is the same role.
    assert registry.rename_role("guru", "Guru", actor=CONSOLE) == "guru"
    assert count(dbsession, AuditEvent) == 1
