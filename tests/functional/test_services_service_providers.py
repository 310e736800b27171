"""ServiceProviders: registering SPs and their policy, whichever front end calls.

``idp-admin sp`` (tests/functional/test_cli_sp.py, test_cli_registry.py) and
the admin console call the same service; these tests call it as the console
will, with an actor that has a user id and an address: the rule, the audit
event with that actor, the refusal, and that a refusal leaves nothing
behind even for a caller that catches it and goes on to commit.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from idp.models import AuditEvent, PersistentNameId, ServiceProvider
from idp.saml import registry
from idp.saml.registry import current_version
from idp.saml.sp_metadata import MetadataError
from idp.services.errors import Conflict, Invalid, NotFound
from idp.services.interfaces import IServiceProviders
from tests.factories import count, make_module, make_user
from tests.saml_metadata import SP_ENTITY_ID, make_sp_metadata
from tests.services import CONSOLE, audited

OTHER = "https://other.example.org/sp"


@pytest.fixture
def sps(service):
    return service(IServiceProviders)


def state(dbsession) -> tuple:
    """Everything an SP operation could write, read back from the database.

    Flushed first, as the caller's commit would: a change left on the
    session counts.
    """
    dbsession.flush()
    dbsession.expire_all()
    rows = dbsession.scalars(select(ServiceProvider).order_by(ServiceProvider.id))
    return (
        [
            (
                sp.entity_id,
                sp.enabled,
                sp.module_id,
                sp.metadata_sha256,
                list(sp.attributes_released),
                sp.name_id_format,
                sp.encrypt_assertion,
            )
            for sp in rows
        ],
        current_version(dbsession)[0],
        count(dbsession, AuditEvent),
    )


def test_imports_are_audited_with_who_and_from_where(sps, dbsession):
    module = make_module(dbsession, "emis")
    first = sps.import_metadata(make_sp_metadata(), module_code="EMIS", actor=CONSOLE)
    registered = first.sp.metadata_sha256
    assert (first.outcome, first.sp.module_id) == ("registered", module.id)
    ((detail, actor, address, subject),) = audited(dbsession, "sp.imported")
    assert (actor, address, subject) == (CONSOLE.user_id, CONSOLE.address, None)
    assert detail == {
        "by": "admin-console",
        "entity_id": SP_ENTITY_ID,
        "module": "emis",
        "enabled": True,
        "metadata_sha256": registered,
    }
    # The same bytes again: nothing written, nothing audited, no rebuild.
    before = state(dbsession)
    again = sps.import_metadata(make_sp_metadata(), actor=CONSOLE)
    assert again.outcome == "unchanged"
    assert state(dbsession) == before
    # New bytes (a later validUntil) that change no trust: an update.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    updated = sps.import_metadata(make_sp_metadata(valid_until=later), actor=CONSOLE)
    assert updated.outcome == "updated"
    ((detail, *_),) = audited(dbsession, "sp.updated")
    assert detail["previous_sha256"] == registered


def test_saml_30_new_keys_need_replace_and_are_audited_with_the_diff(sps, dbsession):
    sps.import_metadata(make_sp_metadata(), actor=CONSOLE)
    before = state(dbsession)
    swapped = make_sp_metadata(encryption=True)
    with pytest.raises(Conflict) as refused:
        sps.import_metadata(swapped, disabled=True, actor=CONSOLE)
    assert refused.value.code == "sp.trust_changed"
    assert any(
        "encryption certificate added" in c for c in refused.value.params["changes"]
    )
    assert state(dbsession) == before
    # The control: with replace, accepted, and the changes audited.
    replaced = sps.import_metadata(swapped, replace=True, actor=CONSOLE)
    assert replaced.trust_changes == refused.value.params["changes"]
    ((detail, *_),) = audited(dbsession, "sp.replaced")
    assert detail["changes"] == replaced.trust_changes


def test_saml_29_a_host_claim_refused_half_way_leaves_the_sp_as_it_was(sps, dbsession):
    """The registry applies an import's options before it checks host claims.

    Called directly, a refused re-import with ``enabled=False`` has already
    disabled the SP on the session when the refusal comes: a console page
    catching the refusal and letting its request commit would switch off a
    partner's sign-in while telling the admin nothing happened. The
    service's SAVEPOINT undoes it.
    """
    sps.import_metadata(make_sp_metadata(OTHER), actor=CONSOLE)
    sps.import_metadata(make_sp_metadata(), actor=CONSOLE)
    squatting = make_sp_metadata(acs="https://other.example.org/acs")

    # The attack on the registry alone: refused, but half-written.
    sp = dbsession.scalar(
        select(ServiceProvider).where(ServiceProvider.entity_id == SP_ENTITY_ID)
    )
    attack = dbsession.begin_nested()
    with pytest.raises(registry.HostClaimed):
        registry.import_sp(
            dbsession, squatting, enabled=False, replace=True, allow_http=True
        )
    assert sp.enabled is False
    attack.rollback()  # forget the half-write

    before = state(dbsession)
    with pytest.raises(Conflict) as refused:
        sps.import_metadata(squatting, disabled=True, replace=True, actor=CONSOLE)
    assert refused.value.code == "sp.host_claimed"
    assert refused.value.params["claims"] == {"other.example.org": [OTHER]}
    assert state(dbsession) == before
    # The control: the administrator vouches for the host; audited as such.
    sps.import_metadata(
        squatting, replace=True, confirm_hosts=[" Other.Example.org "], actor=CONSOLE
    )
    ((detail, *_),) = audited(dbsession, "sp.replaced")
    assert detail["confirmed_hosts"] == ["other.example.org"]


def test_a_policy_refused_half_way_changes_nothing(sps, dbsession):
    """``set_policy`` checks option after option: without the SAVEPOINT the
    release change would stay on the session when the encryption is refused."""
    sps.import_metadata(make_sp_metadata(), actor=CONSOLE)
    changes = {"attributes_released": ["uid", "mail"], "encrypt_assertion": True}

    sp = dbsession.scalar(select(ServiceProvider))
    attack = dbsession.begin_nested()
    with pytest.raises(MetadataError):
        registry.set_policy(dbsession, SP_ENTITY_ID, **changes)
    assert sp.attributes_released == ["uid", "mail"]  # the attack: half-written
    attack.rollback()

    before = state(dbsession)
    with pytest.raises(Invalid) as refused:
        sps.set_policy(SP_ENTITY_ID, changes, actor=CONSOLE)
    assert "publishes no encryption key" in str(refused.value)
    assert state(dbsession) == before
    # The control: a policy that fits is applied and audited.
    del changes["encrypt_assertion"]
    assert sps.set_policy(SP_ENTITY_ID, changes, actor=CONSOLE).attributes_released == [
        "uid",
        "mail",
    ]
    assert audited(dbsession, "sp.policy") == [
        (
            {"by": "admin-console", "entity_id": SP_ENTITY_ID, "changes": changes},
            CONSOLE.user_id,
            CONSOLE.address,
            None,
        )
    ]
    with pytest.raises(Invalid):
        sps.set_policy(SP_ENTITY_ID, {}, actor=CONSOLE)


def test_enable_and_disable_raise_the_generation_once(sps, dbsession):
    sps.import_metadata(make_sp_metadata(), actor=CONSOLE)
    generation = current_version(dbsession)[0]
    assert sps.set_enabled(SP_ENTITY_ID, False, actor=CONSOLE) is True
    assert sps.set_enabled(SP_ENTITY_ID, False, actor=CONSOLE) is False
    assert sps.set_enabled(SP_ENTITY_ID, True, actor=CONSOLE) is True
    assert current_version(dbsession)[0] == generation + 2
    for event in ("sp.disabled", "sp.enabled"):
        assert audited(dbsession, event) == [
            (
                {"by": "admin-console", "entity_id": SP_ENTITY_ID},
                CONSOLE.user_id,
                CONSOLE.address,
                None,
            )
        ]


def test_remove_lists_what_goes_and_refuses_an_sp_registered_again(sps, dbsession):
    sps.import_metadata(make_sp_metadata(), actor=CONSOLE)
    user = make_user(dbsession)
    removal = sps.removal(SP_ENTITY_ID)
    dbsession.add(
        PersistentNameId(
            user_id=user.id, sp_id=removal.registration[0], name_id="a" * 32
        )
    )
    removal = sps.removal(SP_ENTITY_ID)
    assert removal.lines[1].startswith("1 persistent NameID: ")
    # Removed and registered again after the administrator confirmed: another
    # SP, even where SQLite gives it the same row id.
    sps.remove(SP_ENTITY_ID, actor=CONSOLE)
    sps.import_metadata(make_sp_metadata(), actor=CONSOLE)
    before = state(dbsession)
    with pytest.raises(Conflict) as refused:
        sps.remove(SP_ENTITY_ID, confirmed=removal, actor=CONSOLE)
    assert refused.value.code == "sp.registered_again"
    assert state(dbsession) == before
    (first, *_) = audited(dbsession, "sp.removed")
    assert first == (
        {"by": "admin-console", "entity_id": SP_ENTITY_ID, "deleted": removal.lines},
        CONSOLE.user_id,
        CONSOLE.address,
        None,
    )
    assert count(dbsession, PersistentNameId) == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda sps: sps.find(SP_ENTITY_ID),
        lambda sps: sps.set_enabled(SP_ENTITY_ID, False, actor=CONSOLE),
        lambda sps: sps.set_policy(SP_ENTITY_ID, {"global_uid": True}, actor=CONSOLE),
        lambda sps: sps.remove(SP_ENTITY_ID, actor=CONSOLE),
    ],
)
def test_saml_16_an_entity_id_is_matched_exactly(sps, dbsession, call):
    sps.import_metadata(make_sp_metadata(SP_ENTITY_ID + "/"), actor=CONSOLE)
    before = state(dbsession)
    with pytest.raises(NotFound) as refused:
        call(sps)
    assert str(refused.value) == f"no SP is registered as {SP_ENTITY_ID!r}"
    assert state(dbsession) == before


def test_bad_metadata_and_an_unknown_module_are_refused(sps, dbsession):
    for data, module in ((b"<not-metadata/>", None), (make_sp_metadata(), "ghost")):
        with pytest.raises(Invalid) as refused:
            sps.import_metadata(data, module_code=module, actor=CONSOLE)
        assert refused.value.code == "sp.refused"
    assert state(dbsession)[0] == []


def test_a_caller_that_commits_after_a_refusal_writes_nothing(database):
    """The console's case end to end: the page catches the refusal, shows it,
    and its request commits; a fresh session then reads the SP as it was."""
    from sqlalchemy.orm import Session

    from idp.services.audit import AuditLog
    from idp.services.service_providers import ServiceProviders

    def service(session):
        return ServiceProviders(session, AuditLog(session), allow_http=True)

    with Session(database) as session, session.begin():
        service(session).import_metadata(make_sp_metadata(), actor=CONSOLE)
    changes = {"attributes_released": ["uid", "mail"], "encrypt_assertion": True}
    with Session(database) as session, session.begin(), pytest.raises(Invalid):
        service(session).set_policy(SP_ENTITY_ID, changes, actor=CONSOLE)
    with Session(database) as session:
        assert state(session)[0][0][4] == ["uid", "isMemberOf"]
        assert count(session, AuditEvent) == 1
