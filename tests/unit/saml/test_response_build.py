"""The Response as built: the same document for every policy, schema-valid.

The golden files (tests/data/responses/, recorded by tests/response_golden.py
from the builder that used pysaml2's object model) fix what an SP receives:
every element, attribute, namespace prefix and text, in canonical form with
per-call values checked and replaced. No app and no database.
"""

from __future__ import annotations

import functools
from pathlib import Path

import onelogin.saml2
import pytest
from lxml import etree

from idp.saml.xml import SAML_NS
from idp.settings import parse_settings
from tests.response_golden import (
    CASES,
    ERROR_CASES,
    TRICKY,
    Case,
    World,
    decrypted,
    golden_path,
    record,
)

SCHEMAS = Path(onelogin.saml2.__file__).parent / "schemas"


@functools.cache
def protocol_schema() -> etree.XMLSchema:
    """SAML 2.0's protocol schema (as python3-saml ships it, with its imports)."""
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "saml-schema-protocol-2.0.xsd")))


@pytest.fixture(scope="module")
def world(settings, keypair) -> World:
    return World(parse_settings(settings), keypair)


@pytest.mark.parametrize("case", CASES + ERROR_CASES, ids=lambda c: c.name)
def test_response_is_the_recorded_one(world, case):
    assert record(case, world) == golden_path(case).read_text(encoding="utf-8")


@pytest.mark.parametrize("case", CASES + ERROR_CASES, ids=lambda c: c.name)
def test_response_is_valid_against_the_saml_schema(world, case):
    xml = world.response(case)
    schema = protocol_schema()
    assert schema.validate(etree.fromstring(xml)), schema.error_log
    if isinstance(case, Case) and case.encrypt:
        # The plaintext is an Assertion (a global element of the schema).
        clear = etree.fromstring(decrypted(xml))
        assertion = etree.fromstring(
            etree.tostring(next(clear.iter(f"{{{SAML_NS}}}Assertion")))
        )
        assert schema.validate(assertion), schema.error_log


def test_schema_check_is_not_accept_all(world):
    """Control: the same schema refuses an Assertion with its Issuer moved last."""
    root = etree.fromstring(world.response(CASES[0]))
    assertion = root.find(f"{{{SAML_NS}}}Assertion")
    assertion.append(assertion.find(f"{{{SAML_NS}}}Issuer"))
    assert not protocol_schema().validate(root)


def test_saml_33_user_data_is_text_never_markup(world):
    """SAML-33: attribute values are user data; markup in them adds nothing.

    A display name crafted as XML (closing its AttributeValue and opening a
    new Attribute) must arrive as the very same text, and the Response must
    hold exactly the attributes released, each with its values.
    """
    injected = (
        '</ns1:AttributeValue></ns1:Attribute><ns1:Attribute Name="urn:oid:'
        '2.5.4.10"><ns1:AttributeValue>Admin<!-- x --><![CDATA[ y ]]>'
    )
    values = {
        "displayName": [injected, TRICKY, "a\tb\nc  d", " "],
        "mail": ["x@y.my"],
    }
    case = Case("tricky", attributes=values)
    root = etree.fromstring(world.response(case))
    attributes = root.findall(f".//{{{SAML_NS}}}Attribute")
    assert [a.get("FriendlyName") for a in attributes] == ["displayName", "mail"]
    got = {a.get("FriendlyName"): [v.text or "" for v in a] for a in attributes}
    assert got == values
    assert root.find(f".//{{{SAML_NS}}}NameID").text == case.name_id


def test_name_id_value_is_text_never_markup(world):
    value = "<x/>&amp;]]>\"'\U0001f600"
    case = Case("tricky-name-id", name_id=value)
    root = etree.fromstring(world.response(case))
    [name_id] = root.iter(f"{{{SAML_NS}}}NameID")
    assert name_id.text == value
    assert len(name_id) == 0
