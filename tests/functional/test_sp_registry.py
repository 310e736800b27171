"""import_sp / remove_sp / set_enabled: the SP registry in the database.

Runs on SQLite and PostgreSQL. Each change must raise the registry
generation in its own transaction; a refused import writes nothing.
"""

from __future__ import annotations

import hashlib

import pytest
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NAMEID_FORMAT_TRANSIENT
from sqlalchemy import func, select

from idp.models import Module, PersistentNameId, ServiceProvider, SpRegistryState
from idp.models.sp import NAMEID_PERSISTENT
from idp.saml.registry import current_version, import_sp, remove_sp, set_enabled
from idp.saml.sp_metadata import MAX_METADATA_BYTES, MetadataError
from tests.factories import make_user
from tests.saml_metadata import SP_ENTITY_ID, make_sp_metadata, padded


@pytest.fixture
def module(dbsession):
    module = Module(code="emis", display_name_ms="EMIS", display_name_en="EMIS")
    dbsession.add(module)
    dbsession.flush()
    return module


def sp_count(dbsession) -> int:
    return dbsession.scalar(select(func.count(ServiceProvider.id)))


def test_import_registers_an_sp_with_the_default_policy(dbsession, module):
    data = make_sp_metadata(signed_requests=True, encryption=True)
    sp = import_sp(dbsession, data, module_code="emis")
    dbsession.expire_all()
    sp = dbsession.get(ServiceProvider, sp.id)
    assert sp.entity_id == SP_ENTITY_ID
    assert sp.metadata_xml == data.decode("utf-8")
    assert sp.metadata_sha256 == hashlib.sha256(data).hexdigest()
    assert sp.module.code == "emis"
    assert sp.enabled is True
    assert (sp.sign_response, sp.sign_assertion, sp.encrypt_assertion) == (
        True,
        True,
        True,
    )
    assert sp.name_id_format == NAMEID_PERSISTENT
    assert sp.attributes_released == ["uid", "isMemberOf"]


def test_no_encryption_key_means_no_encryption(dbsession):
    sp = import_sp(dbsession, make_sp_metadata())
    assert sp.encrypt_assertion is False
    assert sp.module is None


def test_name_id_format_is_persistent_unless_the_sp_lists_only_others(dbsession):
    # SAML-33: listing emailAddress alone does not make the address the NameID.
    only_email = make_sp_metadata(name_id_formats=(NAMEID_FORMAT_EMAILADDRESS,))
    assert import_sp(dbsession, only_email).name_id_format == NAMEID_PERSISTENT
    both = make_sp_metadata(
        "https://sp2.example.org/sp",
        name_id_formats=(NAMEID_FORMAT_TRANSIENT, NAMEID_PERSISTENT),
    )
    assert import_sp(dbsession, both).name_id_format == NAMEID_PERSISTENT


def test_reimport_updates_the_row_and_keeps_the_policy(dbsession, module):
    sp = import_sp(dbsession, make_sp_metadata(), module_code="emis")
    sp.sign_response = False
    sp.attributes_released = ["urn:oid:2.5.4.3"]
    set_enabled(dbsession, SP_ENTITY_ID, False)
    count = sp_count(dbsession)
    newer = make_sp_metadata(acs="https://sp.example.org/new-acs", encryption=True)
    again = import_sp(dbsession, newer, replace=True)
    assert again.id == sp.id
    assert sp_count(dbsession) == count
    assert "https://sp.example.org/new-acs" in again.metadata_xml
    assert again.metadata_sha256 == hashlib.sha256(newer).hexdigest()
    # Chosen policy, module and the disabled state survive a refresh...
    assert again.sign_response is False
    assert again.attributes_released == ["urn:oid:2.5.4.3"]
    assert again.module.code == "emis"
    assert again.enabled is False
    # ...what the metadata decides follows it.
    assert again.encrypt_assertion is True
    plain = make_sp_metadata()
    assert import_sp(dbsession, plain, replace=True).encrypt_assertion is False
    assert import_sp(dbsession, plain, enabled=True).enabled is True


def test_saml_30_a_reimport_that_swaps_keys_or_endpoints_needs_replace(dbsession):
    """SAML-30: new keys or endpoints are refused unless replaced explicitly."""
    from idp.saml.registry import ReplaceRefused

    original = make_sp_metadata()
    sp = import_sp(dbsession, original)
    digest = sp.metadata_sha256
    takeover = make_sp_metadata(acs="https://sp.example.org/new-acs", encryption=True)
    with pytest.raises(ReplaceRefused) as refused:
        import_sp(dbsession, takeover)
    changes = refused.value.changes
    assert "AssertionConsumerService added: https://sp.example.org/new-acs" in (
        " ".join(changes)
    )
    assert any(c.startswith("encryption certificate added") for c in changes)
    dbsession.refresh(sp)
    assert sp.metadata_sha256 == digest
    # The controls: the same metadata again is accepted, and so is the new
    # one when the replacement is explicit, with its changes listed.
    assert import_sp(dbsession, original).trust_changes == []
    replaced = import_sp(dbsession, takeover, replace=True)
    assert replaced.trust_changes == changes
    assert replaced.metadata_sha256 != digest


def test_every_change_raises_the_generation(dbsession):
    start = current_version(dbsession)[0]
    import_sp(dbsession, make_sp_metadata())
    assert current_version(dbsession)[0] == start + 1
    import_sp(dbsession, make_sp_metadata())
    assert current_version(dbsession)[0] == start + 2
    set_enabled(dbsession, SP_ENTITY_ID, False)
    assert current_version(dbsession)[0] == start + 3
    set_enabled(dbsession, SP_ENTITY_ID, True)
    assert current_version(dbsession)[0] == start + 4
    remove_sp(dbsession, SP_ENTITY_ID)
    assert current_version(dbsession)[0] == start + 5
    assert dbsession.scalar(select(func.count(SpRegistryState.id))) == 1


def test_the_first_change_creates_the_state_row_at_1(dbsession):
    dbsession.execute(SpRegistryState.__table__.delete())
    assert current_version(dbsession)[0] == 0
    import_sp(dbsession, make_sp_metadata())
    assert current_version(dbsession)[0] == 1


def test_remove_takes_the_persistent_name_ids_with_it(dbsession):
    sp = import_sp(dbsession, make_sp_metadata())
    user = make_user(dbsession)
    dbsession.add(PersistentNameId(user_id=user.id, sp_id=sp.id, name_id="n-1"))
    dbsession.flush()
    remove_sp(dbsession, SP_ENTITY_ID)
    dbsession.expire_all()
    assert dbsession.scalar(select(func.count(PersistentNameId.id))) == 0
    assert sp_count(dbsession) == 0


def test_unknown_module_is_refused_and_nothing_is_written(dbsession, module):
    generation = current_version(dbsession)[0]
    with pytest.raises(MetadataError, match="no module has the code 'nope'"):
        import_sp(dbsession, make_sp_metadata(), module_code="nope")
    assert sp_count(dbsession) == 0
    assert current_version(dbsession)[0] == generation
    assert import_sp(dbsession, make_sp_metadata(), module_code="emis").module


def test_ops_03_oversized_metadata_writes_nothing(dbsession):
    """OPS-03: import refuses 5 MiB + 1 byte, naming the limit; nothing written."""
    generation = current_version(dbsession)[0]
    data = make_sp_metadata()
    with pytest.raises(MetadataError, match="limit is"):
        import_sp(dbsession, padded(data, MAX_METADATA_BYTES + 1))
    assert sp_count(dbsession) == 0
    assert current_version(dbsession)[0] == generation
    import_sp(dbsession, padded(data, MAX_METADATA_BYTES))
    assert sp_count(dbsession) == 1


def test_http_acs_is_refused_on_import(dbsession):
    with pytest.raises(MetadataError, match="is not https"):
        import_sp(dbsession, make_sp_metadata(acs="http://sp.example.org/acs"))
    assert sp_count(dbsession) == 0


def test_unknown_entity_ids_are_refused(dbsession):
    import_sp(dbsession, make_sp_metadata())
    generation = current_version(dbsession)[0]
    # Exact match only: a trailing slash or another case is another entity.
    for other in (SP_ENTITY_ID + "/", SP_ENTITY_ID.upper()):
        with pytest.raises(MetadataError, match="no SP is registered"):
            remove_sp(dbsession, other)
        with pytest.raises(MetadataError, match="no SP is registered"):
            set_enabled(dbsession, other, False)
    assert current_version(dbsession)[0] == generation
    assert sp_count(dbsession) == 1
