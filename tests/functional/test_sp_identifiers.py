"""Entity IDs are absolute URIs; an email NameID only goes where mail is released."""

from __future__ import annotations

import pytest
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS as EMAIL
from saml2.saml import NAMEID_FORMAT_PERSISTENT as PERSISTENT

from idp.saml.registry import import_sp, set_policy
from idp.saml.sp_metadata import MetadataError, parse_sp_metadata
from tests.cli import admin, assert_refused, rows
from tests.functional.test_sso_responses import (
    INVALID_NAMEID_POLICY,
    assert_error_response,
    error_code,
    name_id_of,
    sso,
)
from tests.saml_metadata import SP_ENTITY_ID, make_sp_metadata
from tests.saml_requests import new_id
from tests.signin import sign_in

ACS = "https://sp.example.org/acs"
SLO = "https://sp.example.org/slo"

NOT_ABSOLUTE = [
    "emis-sp",
    "sp.example.org",
    "/saml/sp",
    "https://",
    "https:///sp",
    "https:sp.example.org",
    "//sp.example.org/sp",
    "urn:",
    "urn:sp",
    "mailto:sp@example.org",
    "javascript:alert(1)",
    "https://sp example.org/sp",
]
ABSOLUTE = [
    "https://sp.example.org/sp",
    "http://sp.example.org/shibboleth",
    "urn:mace:example.org:sp",
    "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
]


@pytest.mark.parametrize("entity_id", NOT_ABSOLUTE)
def test_entity_id_that_is_not_an_absolute_uri_is_refused(entity_id):
    data = make_sp_metadata(entity_id, acs=ACS, slo=SLO)
    with pytest.raises(MetadataError, match="absolute URI"):
        parse_sp_metadata(data)


@pytest.mark.parametrize("entity_id", ABSOLUTE)
def test_absolute_entity_ids_are_accepted(entity_id):
    """Control: URLs with a scheme and host, and URNs, register."""
    data = make_sp_metadata(entity_id, acs=ACS, slo=SLO)
    assert parse_sp_metadata(data).entity_id == entity_id


def test_cli_refuses_a_relative_entity_id_in_one_line(ini, database, tmp_path):
    relative = tmp_path / "relative.xml"
    relative.write_bytes(make_sp_metadata("emis-sp", acs=ACS, slo=SLO))
    assert_refused(
        admin(ini, "sp", "import", relative, "--module", "emis"),
        "entityID 'emis-sp' is not an absolute URI",
    )
    assert rows(database) == {}
    # Control: the same metadata under a URL entity ID registers.
    good = tmp_path / "good.xml"
    good.write_bytes(make_sp_metadata(SP_ENTITY_ID, acs=ACS, slo=SLO))
    assert admin(ini, "sp", "import", good, "--module", "emis").returncode == 0


def test_cli_policy_refuses_email_name_id_unless_mail_is_released(
    ini,
    database,
    tmp_path,
):
    metadata = tmp_path / "sp.xml"
    metadata.write_bytes(make_sp_metadata())
    assert admin(ini, "sp", "import", metadata, "--module", "emis").returncode == 0
    assert_refused(
        admin(ini, "sp", "policy", SP_ENTITY_ID, "--name-id-format", "email"),
        "the email NameID format needs mail released",
    )
    assert rows(database)[SP_ENTITY_ID].name_id_format == PERSISTENT
    # Control: with mail released the same change is accepted...
    result = admin(
        ini,
        "sp",
        "policy",
        SP_ENTITY_ID,
        "--release",
        "uid,mail",
        "--name-id-format",
        "email",
    )
    assert result.returncode == 0, result.stderr
    assert rows(database)[SP_ENTITY_ID].name_id_format == EMAIL
    # ...and mail cannot then be withdrawn while the NameID is the address.
    assert_refused(
        admin(ini, "sp", "policy", SP_ENTITY_ID, "--release", "uid"),
        "the email NameID format needs mail released",
    )
    assert rows(database)[SP_ENTITY_ID].attributes_released == ["uid", "mail"]


def test_set_policy_email_without_mail_writes_nothing(dbsession, module):
    sp = import_sp(dbsession, make_sp_metadata(), module_code="emis")
    with pytest.raises(MetadataError, match="needs mail released"):
        set_policy(dbsession, SP_ENTITY_ID, name_id_format="email")
    assert sp.name_id_format == PERSISTENT


@pytest.fixture
def email_only_sp(dbsession, module):
    """An SP whose metadata lists only the emailAddress NameID format."""
    sp = import_sp(
        dbsession, make_sp_metadata(name_id_formats=(EMAIL,)), module_code="emis"
    )
    dbsession.flush()
    return sp


@pytest.mark.parametrize("lang", ["ms", "en"])
def test_saml_33_sp_listing_only_email_does_not_get_the_address(
    testapp, dbsession, email_only_sp, user, keypair, lang
):
    """SAML-33: metadata listing emailAddress alone does not release the address."""
    assert email_only_sp.attributes_released == ["uid", "isMemberOf"]
    sign_in(testapp, user)
    page = sso(testapp, status=200)
    name_id = name_id_of(page)
    assert name_id.get("Format") == PERSISTENT
    assert user.email not in page.text
    # Asking for it gets InvalidNameIDPolicy, in the user's language.
    request_id = new_id()
    page = sso(testapp, request_id=request_id, name_id_format=EMAIL)
    assert page.status_int == 400
    assert error_code(page) == "saml_name_id_policy"
    xml = assert_error_response(page, keypair, request_id, INVALID_NAMEID_POLICY)
    assert user.email.encode() not in xml


def test_saml_33_stored_email_policy_without_mail_is_refused_at_sso(
    testapp, dbsession, sp, user, keypair
):
    """SAML-33: a policy row saying email but not releasing mail sends no address."""
    sp.name_id_format = EMAIL
    sp.attributes_released = ["uid", "isMemberOf"]
    dbsession.flush()
    sign_in(testapp, user)
    request_id = new_id()
    page = sso(testapp, request_id=request_id)
    assert page.status_int == 400
    assert error_code(page) == "saml_name_id_policy"
    xml = assert_error_response(page, keypair, request_id, INVALID_NAMEID_POLICY)
    assert user.email.encode() not in xml
    # Control: release mail and the same request gets the address.
    sp.attributes_released = ["uid", "isMemberOf", "mail"]
    dbsession.flush()
    name_id = name_id_of(sso(testapp, status=200))
    assert (name_id.get("Format"), name_id.text) == (EMAIL, user.email)
