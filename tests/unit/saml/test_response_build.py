"""The Response as built: the same document for every policy, schema-valid.

The golden files (tests/data/responses/, recorded by tests/response_golden.py
from the builder that used pysaml2's object model) fix what an SP receives:
every element, attribute, namespace prefix and text, in canonical form with
per-call values checked and replaced. No app and no database.
"""

from __future__ import annotations

import functools
import shutil
import string
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import onelogin.saml2
import pytest
from lxml import etree

from idp.saml import keys as keystore
from idp.saml.crypto import KEY_RECHECK_SECONDS, SignatureError, XmlsecBackend
from idp.saml.response import UnknownAttribute, new_id, success_template
from idp.saml.xml import DS_NS, SAML_NS
from idp.settings import parse_settings
from tests.app import TEST_HOST
from tests.response_golden import (
    CASES,
    ERROR_CASES,
    ID_SHAPE,
    TRANSIENT,
    TRICKY,
    Case,
    World,
    decrypted,
    golden_path,
    record,
    verify_signatures,
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


# --------------------------------------------------------------------------
# Templates: one per shape, shared by threads, never changed


def test_one_template_per_shape(world):
    success_template.cache_clear()
    first = Case("a", attributes={"uid": ["1"], "mail": ["a@b.my"]})
    world.build(first)
    world.build(replace(first, name_id="another"))
    assert success_template.cache_info().misses == 1
    assert success_template.cache_info().hits == 1
    # Each thing the policy decides is part of the shape.
    for other in (
        replace(first, attributes={"uid": ["1"]}),
        replace(first, attributes={"mail": ["a@b.my"], "uid": ["1"]}),  # order
        replace(first, name_id_format=TRANSIENT),
        replace(first, sign_assertion=False),
        replace(first, sign_response=False),
    ):
        misses = success_template.cache_info().misses
        world.build(other)
        assert success_template.cache_info().misses == misses + 1


def test_a_new_signing_certificate_is_a_new_template(world, monkeypatch):
    case = Case("a", attributes={"uid": ["1"]})
    before = etree.fromstring(world.response(case))
    monkeypatch.setattr(world.server.sec, "my_cert", "QUJD")
    after = etree.fromstring(world.response(case))
    certificates = [
        [c.text for c in root.iter(f"{{{DS_NS}}}X509Certificate")]
        for root in (before, after)
    ]
    assert certificates[0] and "QUJD" not in certificates[0]
    assert certificates[1] == ["QUJD", "QUJD"]


def test_concurrent_builds_from_one_template_share_no_state(world, keypair):
    """Threads fill their own copies at once; none sees another's values."""
    shape_case = Case("threads", attributes={"displayName": ["x"], "isMemberOf": []})
    world.build(shape_case)
    misses = success_template.cache_info().misses
    start = threading.Barrier(6)

    def build(worker: int) -> list[tuple[str, bytes]]:
        start.wait()
        made = []
        for n in range(15):
            mine = f"w{worker}-n{n}-\U0001f600"
            roles = [f"r{worker}-{i}" for i in range(n % 4)]
            case = replace(
                shape_case,
                name_id=mine,
                attributes={"displayName": [mine], "isMemberOf": roles},
            )
            made.append((mine, roles, world.response(case)))
        return made

    with ThreadPoolExecutor(6) as pool:
        results = [r for batch in pool.map(build, range(6)) for r in batch]
    assert success_template.cache_info().misses == misses
    ids = set()
    for mine, roles, xml in results:
        root = etree.fromstring(xml)
        assert root.find(f".//{{{SAML_NS}}}NameID").text == mine
        values = {
            a.get("FriendlyName"): [v.text for v in a]
            for a in root.iter(f"{{{SAML_NS}}}Attribute")
        }
        assert values == {"displayName": [mine], "isMemberOf": roles}
        ids.update(e.get("ID") for e in root.iter() if e.get("ID"))
    assert len(ids) == 2 * len(results)
    for _, _, xml in results[::10]:
        assert verify_signatures(xml, keypair) == 2


def test_saml_33_an_attribute_outside_the_releasable_set_is_never_sent(world):
    """SAML-33: the builder itself refuses a name no policy can release."""
    with pytest.raises(UnknownAttribute, match="ic"):
        world.build(Case("ic", attributes={"uid": ["1"], "ic": ["080512140001"]}))
    # Control: the releasable ones alone are fine.
    world.build(Case("ok", attributes={"uid": ["1"]}))


def test_ids_have_pysaml2s_shape_and_do_not_repeat():
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(ID_SHAPE.match(i) for i in ids)
    # Every letter and digit turns up: no alphabet bias towards a few.
    assert set("".join(i[3:] for i in ids)) == set(string.ascii_letters + string.digits)


# --------------------------------------------------------------------------
# The signing key: loaded once, looked at again at most once a second


def test_a_key_file_replaced_in_place_signs_within_a_second(tmp_path, monkeypatch):
    """A key file rewritten at the same path (a re-made development key) is
    used from the next look at the file on; until then the loaded key is.
    (A rollover names another file and is used at once.)"""
    from idp.saml import crypto

    clock = [1000.0]
    monkeypatch.setattr(crypto.time, "monotonic", lambda: clock[0])
    first = keystore.generate(tmp_path / "one", TEST_HOST, key_size=2048)
    second = keystore.generate(tmp_path / "two", TEST_HOST, key_size=2048)
    live = tmp_path / "live.key"
    shutil.copy(first.key_file, live)
    backend = XmlsecBackend()

    def signer() -> str:
        root = etree.fromstring(b'<r xmlns="urn:x" ID="id-1"><Issuer/></r>')
        backend.sign_element(root, str(live))
        xml = etree.tostring(root)
        for pair in (first, second):
            try:
                backend.validate_signature(
                    xml, str(pair.cert_file), "pem", "urn:x:r", "id-1"
                )
            except SignatureError:
                continue
            return "first" if pair is first else "second"
        raise AssertionError("signed by neither key")

    assert signer() == "first"
    shutil.copy(second.key_file, live)
    clock[0] += KEY_RECHECK_SECONDS / 2
    assert signer() == "first"
    clock[0] += KEY_RECHECK_SECONDS
    assert signer() == "second"
    # Another path (a rollover's new kid file) is read at once.
    assert backend.signing_key(first.key_file) is not backend.signing_key(live)


# --------------------------------------------------------------------------
# Signed without libxmlsec's signing path, byte for byte as it would


def _resigned_by_libxmlsec(xml: bytes, key_file: str) -> bytes:
    """``xml`` with every visible signature's values emptied and made again
    by libxmlsec's own ``SignatureContext.sign``, innermost first."""
    import xmlsec

    root = etree.fromstring(xml)
    signatures = list(root.iter(f"{{{DS_NS}}}Signature"))
    for signature in signatures:
        signature[0][2][2].text = None  # DigestValue
        signature[1].text = None  # SignatureValue
    key = XmlsecBackend().signing_key(key_file)
    for signature in reversed(signatures):
        ctx = xmlsec.SignatureContext()
        ctx.key = key
        xmlsec.tree.add_ids(signature.getparent(), ["ID"])
        ctx.sign(signature)
    return etree.tostring(root, encoding="UTF-8")


SIGNED_CASES = [
    case
    for case in CASES + ERROR_CASES
    if not isinstance(case, Case) or case.sign_response or case.sign_assertion
]


@pytest.mark.parametrize("case", SIGNED_CASES, ids=lambda c: c.name)
def test_each_signature_is_the_one_libxmlsec_makes(world, case):
    """SAML-35: the Response and Assertion signatures, made in Python (exclusive
    c14n by libxml2, RSA by ``cryptography``), are byte for byte those
    libxmlsec makes over the same document: same digests, same
    SignatureValue (PKCS#1 v1.5 is deterministic), same line breaks. An
    encrypted Assertion's signature is inside the ciphertext; the Response's
    over it is compared.
    """
    xml = world.response(case)
    assert xml.count(b"<ds:SignatureValue>") >= 1
    assert _resigned_by_libxmlsec(xml, world.keypair.key_file) == xml


def test_a_3072_bit_signature_is_the_one_libxmlsec_makes(tmp_path):
    """The production key size: 512 base64 characters, eight full lines."""
    from idp.saml.crypto import signature_reference, signature_template

    pair = keystore.generate(tmp_path, TEST_HOST, key_size=3072)
    root = etree.fromstring(
        b'<r xmlns="urn:x" xmlns:a="urn:a" ID="id-r"><a:Issuer>i</a:Issuer>'
        b'<a:A ID="id-a"><a:Issuer>j</a:Issuer><a:S>\xc3\xa9 &amp; &lt;</a:S></a:A></r>'
    )
    for element in (root[1], root):
        element.insert(1, signature_template(pair.cert_file.read_text()))
        signature_reference(element[1]).set("URI", "#" + element.get("ID"))
        XmlsecBackend().sign_in_place(element[1], str(pair.key_file))
    xml = etree.tostring(root, encoding="UTF-8")
    assert len(root[1].findtext(f"{{{DS_NS}}}SignatureValue")) == 512 + 7
    assert _resigned_by_libxmlsec(xml, str(pair.key_file)) == xml


def test_a_template_of_another_shape_is_signed_by_libxmlsec(tmp_path, keypair):
    """A signature followed by text (which the enveloped transform keeps
    and removing the element would lose) or with an algorithm other than
    the template's is left to libxmlsec, whose signature verifies."""
    from idp.saml import crypto

    backend = XmlsecBackend()
    for change in ("tail", "algorithm"):
        root = etree.fromstring(b'<r xmlns="urn:x" ID="id-1"><Issuer/></r>')
        signature = crypto.signature_template()
        root.insert(1, signature)
        crypto.signature_reference(signature).set("URI", "#id-1")
        if change == "tail":
            signature.tail = "\n"
        else:
            signature[0][0].set(
                "Algorithm", "http://www.w3.org/2001/10/xml-exc-c14n#WithComments"
            )
        assert (
            crypto._sign_enveloped(
                root, signature, backend.signing_rsa_key(keypair.key_file)
            )
            is False
        )
        assert signature[1].text is None  # nothing changed
        backend.sign_in_place(signature, str(keypair.key_file))
        backend.validate_signature(
            etree.tostring(root), str(keypair.cert_file), "pem", "urn:x:r", "id-1"
        )


@pytest.mark.parametrize("content", [b"not a key\n", b""], ids=["garbage", "empty"])
def test_a_key_file_nothing_can_read_is_a_signature_error(tmp_path, content):
    """No traceback and no unsigned document: the signing path that cannot
    read the key leaves it to libxmlsec, which refuses as it always did."""
    key_file = tmp_path / "broken.key"
    key_file.write_bytes(content)
    root = etree.fromstring(b'<r xmlns="urn:x" ID="id-1"><Issuer/></r>')
    with pytest.raises(SignatureError, match="cannot sign"):
        XmlsecBackend().sign_element(root, str(key_file))
