"""SAML-28 and signature wrapping around signed aggregates: ``verify_metadata``.

Every attack starts from a genuine aggregate signed by the federation's key
(tests/aggregates.py) in each of the four ways federations sign: ``URI=""``
or ``URI="#ID"``, exclusive or inclusive c14n.  Each refusal is paired with
that untouched document, accepted by the same call, and where the attacked
document is a genuine signature (a legitimate key, a signature moved or
narrowed), plain libxmlsec is shown to accept it: the refusal comes from the
verifier's rules, not from a broken document.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from lxml import etree

from idp.saml.metadata_signature import (
    MetadataSignatureError,
    TrustAnchor,
    parse_anchor,
    verify_metadata,
)
from idp.saml.sp_metadata import MetadataError, parse_sp_metadata
from tests import saml_attacks as attacks
from tests.aggregates import (
    DS,
    MD,
    RSA_SHA256,
    federation_keys,
    make_aggregate,
    sign_metadata,
    sp_entity,
)
from tests.saml_attacks import XSW_CASES

MD_ENTITIES = f"{{{MD}}}EntitiesDescriptor"
MD_ENTITY = f"{{{MD}}}EntityDescriptor"
MD_EXTENSIONS = f"{{{MD}}}Extensions"
DS_SIGNATURE = f"{{{DS}}}Signature"
EVIL_ENTITY_ID = "https://evil.example/shibboleth"
EVIL_ACS = "https://evil.example/acs"
XMLSEC1 = shutil.which("xmlsec1") or "/usr/bin/xmlsec1"
needs_xmlsec1 = pytest.mark.skipif(
    not os.path.exists(XMLSEC1), reason="the xmlsec1 binary is not installed"
)

# (reference, c14n): the four ways federations sign an aggregate.
SIGNINGS = [
    pytest.param(("id", "exclusive"), id="id-exc"),
    pytest.param(("id", "inclusive"), id="id-inc"),
    pytest.param(("whole", "exclusive"), id="whole-exc"),
    pytest.param(("whole", "inclusive"), id="whole-inc"),
]


def _pem(cert_file: str) -> str:
    return Path(cert_file).read_text()


def _sha256(cert_file: str) -> str:
    certificate = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    return certificate.fingerprint(hashes.SHA256()).hex()


def _colons(hex_digest: str) -> str:
    return ":".join(hex_digest[i : i + 2] for i in range(0, len(hex_digest), 2))


@pytest.fixture(scope="module")
def federation() -> tuple[str, str]:
    return federation_keys()


@pytest.fixture(scope="module")
def attacker() -> tuple[str, str]:
    return federation_keys("attacker")


@pytest.fixture(scope="module")
def anchors(federation) -> dict[str, TrustAnchor]:
    return {
        "certificate": parse_anchor(_pem(federation[1])),
        "fingerprint": parse_anchor(_colons(_sha256(federation[1])).upper()),
    }


@pytest.fixture(params=["certificate", "fingerprint"])
def anchor(request, anchors) -> TrustAnchor:
    return anchors[request.param]


@pytest.fixture(scope="module", params=SIGNINGS)
def signing(request) -> tuple[str, str]:
    return request.param


@pytest.fixture(scope="module")
def aggregate(federation, signing) -> bytes:
    reference, c14n = signing
    return make_aggregate(3, signer=federation, reference=reference, c14n=c14n)


def _refused(document: bytes, anchor: TrustAnchor, match: str, **kwargs) -> str:
    with pytest.raises(MetadataSignatureError, match=match) as caught:
        verify_metadata(document, anchor, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def _tree(document: bytes) -> etree._Element:
    return attacks.parse(document)


# --------------------------------------------------------------------------
# The good document


def test_signed_aggregate_verifies(aggregate, anchor):
    root = verify_metadata(aggregate, anchor)
    assert root.tag == MD_ENTITIES
    assert [e.get("entityID") for e in root.iter(MD_ENTITY)] == [
        f"https://sp{i}.example.edu.my/shibboleth" for i in range(3)
    ]


def test_signed_entity_descriptor_verifies(federation, anchor):
    document = sign_metadata(
        etree.tostring(
            _tree(make_aggregate([sp_entity(7, id="_sp7")])).find(MD_ENTITY)
        ),
        federation[0],
        cert_file=federation[1],
    )
    root = verify_metadata(document, anchor)
    assert root.tag == MD_ENTITY
    assert root.get("entityID") == "https://sp7.example.edu.my/shibboleth"


def test_each_entity_of_the_helper_registers(aggregate):
    """The generator's entities are what the registry accepts, one by one."""
    root = _tree(aggregate)
    for index, entity in enumerate(root.iter(MD_ENTITY)):
        sp = parse_sp_metadata(etree.tostring(entity))
        assert sp.entity_id == f"https://sp{index}.example.edu.my/shibboleth"
        assert sp.assertion_consumer_services[0].location.startswith(
            f"https://sp{index}.example.edu.my/"
        )
        assert sp.signing_certificates and sp.encryption_certificates
        assert "urn:oid:0.9.2342.19200300.100.1.3" in sp.requested_attributes


def test_helper_options(federation):
    document = make_aggregate(
        [sp_entity(0), sp_entity(1, acs="http://sp1.example.edu.my/acs")],
        cache_duration="PT6H",
        signer=federation,
        key_info=False,
    )
    root = _tree(document)
    assert root.get("cacheDuration") == "PT6H"
    assert root.get("validUntil").endswith("Z")
    assert root[0].tag == DS_SIGNATURE
    assert root[0].find(f"{{{DS}}}KeyInfo") is None
    assert root.findall(MD_ENTITY)[1].find(f".//{{{MD}}}AssertionConsumerService").get(
        "Location"
    ) == ("http://sp1.example.edu.my/acs")
    assert make_aggregate(1).find(b"Signature") == -1

    expired = sp_entity(2, valid_until=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    no_acs = sp_entity(
        3,
        mutate=lambda e: [
            a.getparent().remove(a) for a in e.iter(f"{{{MD}}}AssertionConsumerService")
        ],
    )
    first, second = _tree(make_aggregate([expired, no_acs])).findall(MD_ENTITY)
    assert first.get("validUntil") == "2020-01-01T00:00:00Z"
    with pytest.raises(MetadataError, match=r"expired|validUntil"):
        parse_sp_metadata(etree.tostring(first))
    with pytest.raises(MetadataError, match="AssertionConsumerService"):
        parse_sp_metadata(etree.tostring(second))


# --------------------------------------------------------------------------
# SAML-28: altered, wrong signer, unsigned


def test_saml_28_altered_entity_refused(aggregate, anchor):
    verify_metadata(aggregate, anchor)
    attacked = aggregate.replace(
        b"https://sp1.example.edu.my/Shibboleth.sso/SAML2/POST", EVIL_ACS.encode()
    )
    assert attacked != aggregate
    _refused(attacked, anchor, r"^metadata was altered after signing")


def test_saml_28_forged_entity_appended_beside_valid_signature(aggregate, anchor):
    root = _tree(aggregate)
    forged = copy.deepcopy(root.find(MD_ENTITY))
    forged.set("entityID", EVIL_ENTITY_ID)
    root.append(forged)
    _refused(attacks.serialize(root), anchor, r"^metadata was altered after signing")


def test_saml_28_wrong_signer_named(federation, attacker, anchor, signing):
    """Signed by another key carrying its certificate: its fingerprint is named."""
    reference, c14n = signing
    document = make_aggregate(2, signer=attacker, reference=reference, c14n=c14n)
    assert attacks.plain_libxmlsec_accepts(document, attacker[1])
    message = _refused(document, anchor, r"^metadata is signed by another key")
    assert _colons(_sha256(attacker[1])) in message
    assert _colons(_sha256(federation[1])) in message


def test_saml_28_wrong_signer_without_keyinfo(attacker, anchors):
    document = make_aggregate(2, signer=attacker, key_info=False)
    _refused(
        document,
        anchors["certificate"],
        r"^metadata signature does not verify with the trust anchor's key",
    )
    # A fingerprint needs the certificate from KeyInfo.
    _refused(
        document, anchors["fingerprint"], r"carries no certificate in its ds:KeyInfo"
    )


def test_saml_28_fingerprint_anchor_with_keyinfo_cert_of_another_key(
    federation, attacker, anchors
):
    """SAML-28: the attacker's own certificate in KeyInfo is never trusted, and
    the federation's certificate in KeyInfo does not make the attacker's
    signature verify."""
    anchor = anchors["fingerprint"]
    own = make_aggregate(2, signer=attacker)
    message = _refused(own, anchor, r"^metadata is signed by another key")
    assert _colons(_sha256(attacker[1])) in message
    borrowed = sign_metadata(make_aggregate(2), attacker[0], cert_file=federation[1])
    _refused(
        borrowed,
        anchor,
        r"^metadata signature does not verify with the trust anchor's key",
    )


def test_saml_28_unsigned_where_an_anchor_is_configured(anchor):
    _refused(make_aggregate(2), anchor, r"^metadata is not signed")


def test_saml_28_sha1_refused_unless_allowed(federation, anchor):
    document = sign_metadata(
        make_aggregate(2),
        federation[0],
        cert_file=federation[1],
        signature_method=attacks.RSA_SHA1,
        digest_method=attacks.SHA1,
    )
    _refused(document, anchor, r"SHA-1 .* refused")
    assert verify_metadata(document, anchor, allow_sha1=True).tag == MD_ENTITIES


def test_saml_28_no_anchor_no_verification():
    with pytest.raises(MetadataSignatureError, match="no trust anchor"):
        verify_metadata(make_aggregate(1), TrustAnchor())


# --------------------------------------------------------------------------
# Signature wrapping around signed aggregates


def _evil_first_entity(element: etree._Element) -> None:
    target = element if element.tag == MD_ENTITY else next(element.iter(MD_ENTITY))
    target.set("entityID", EVIL_ENTITY_ID)


@pytest.mark.parametrize("shape", XSW_CASES)
def test_xsw_around_signed_aggregate_refused(aggregate, anchor, shape):
    """SAML-01..08: every XSW shape, built around a signed aggregate, refused."""
    verify_metadata(aggregate, anchor)
    attacked = attacks.ALL[shape](aggregate, _evil_first_entity)
    assert EVIL_ENTITY_ID.encode() in attacked
    _refused(attacked, anchor, r"^metadata")


def test_signed_original_moved_inside_extensions(
    aggregate, anchor, federation, signing
):
    """An unsigned aggregate of forged entities carries the signed original
    in its md:Extensions (a lax-schema hiding place).  A ``#ID`` signature
    still verifies where it now sits, for plain libxmlsec."""
    original = _tree(aggregate)
    evil = etree.Element(MD_ENTITIES, nsmap={"md": MD}, Name="evil", ID="_evil")
    etree.SubElement(evil, MD_EXTENSIONS).append(original)
    forged = copy.deepcopy(original.find(MD_ENTITY))
    forged.set("entityID", EVIL_ENTITY_ID)
    evil.append(forged)
    attacked = attacks.serialize(evil)
    assert attacks.plain_libxmlsec_accepts(attacked, federation[1]) == (
        signing[0] == "id"
    )
    _refused(attacked, anchor, r"signature wrapping")


def test_second_entities_descriptor_wraps_the_signed_one(
    aggregate, anchor, federation, signing
):
    """Nested EntitiesDescriptors are schema-valid: the forged outer one holds a
    forged entity and the signed original (which plain libxmlsec still
    verifies when it is signed by ``#ID``), under another ID or its own."""
    original = _tree(aggregate)
    for outer_id in ("_outer", original.get("ID")):
        evil = etree.Element(MD_ENTITIES, nsmap={"md": MD}, Name="evil", ID=outer_id)
        forged = copy.deepcopy(original.find(MD_ENTITY))
        forged.set("entityID", EVIL_ENTITY_ID)
        evil.append(forged)
        evil.append(copy.deepcopy(original))
        attacked = attacks.serialize(evil)
        if outer_id == "_outer":
            assert attacks.plain_libxmlsec_accepts(attacked, federation[1]) == (
                signing[0] == "id"
            )
        _refused(attacked, anchor, r"signature wrapping|duplicate ID")


def test_duplicate_ids_refused(aggregate, anchor, federation):
    root = _tree(aggregate)
    forged = copy.deepcopy(root.find(MD_ENTITY))
    forged.set("ID", root.get("ID"))
    forged.set("entityID", EVIL_ENTITY_ID)
    root.insert(1, forged)
    _refused(attacks.serialize(root), anchor, r"duplicate ID value '_aggregate-0001'")
    # xml:id, which libxml2 registers as an ID while parsing, and Id.
    for name in ("{http://www.w3.org/XML/1998/namespace}id", "Id"):
        del forged.attrib["ID"]
        forged.set(name, root.get("ID"))
        _refused(
            attacks.serialize(root), anchor, r"duplicate ID value '_aggregate-0001'"
        )
        del forged.attrib[name]
        forged.set("ID", root.get("ID"))
    # Even under a valid signature: an ID two elements hold resolves to either.
    twins = make_aggregate(
        [sp_entity(0, id="_twin"), sp_entity(1, id="_twin")], signer=federation
    )
    assert attacks.plain_libxmlsec_accepts(twins, federation[1])
    _refused(twins, anchor, r"duplicate ID value '_twin'")


def test_reference_to_a_nested_element_refused(federation, anchor):
    """The federation's own key, but the root's signature covers only one
    entity: everything beside it could be forged."""
    unsigned = make_aggregate([sp_entity(0, id="_sp0"), sp_entity(1)])
    narrowed = sign_metadata(
        unsigned, federation[0], reference="#_sp0", cert_file=federation[1]
    )
    assert attacks.plain_libxmlsec_accepts(narrowed, federation[1])
    _refused(narrowed, anchor, r"Reference URI '#_sp0' is not")


def test_whole_document_signature_below_the_root_refused(federation, anchor):
    """A ``URI=""`` signature moved from the root into the first entity still
    verifies for libxmlsec (the enveloped transform cuts it wherever it is)."""
    document = make_aggregate(3, signer=federation, reference="whole")
    root = _tree(document)
    signature = root.find(DS_SIGNATURE)
    root.find(MD_ENTITY).insert(0, signature)
    moved = attacks.serialize(root, declaration=True)
    assert attacks.plain_libxmlsec_accepts(moved, federation[1])
    _refused(moved, anchor, r"references the whole document \(signature wrapping\)")


def test_comment_injected_into_an_entity_id(federation, anchor, signing):
    """CVE-2017-11427 in metadata: a comment inside a signed text value leaves
    the signature valid (c14n drops comments) but cuts ``.text`` short.  The
    verified tree has no comments, so the full signed value is read."""
    reference, c14n = signing
    squatter = "https://sp1.example.edu.my.evil.example/shibboleth"
    document = make_aggregate(
        [sp_entity(0), sp_entity(1, entity_id=squatter)],
        signer=federation,
        reference=reference,
        c14n=c14n,
    )
    name = f"{{{MD}}}ServiceName"
    root = _tree(document)
    target = root.findall(f".//{name}")[1]
    assert target.text == squatter
    target.text = "https://sp1.example.edu.my"
    comment = etree.Comment("")
    comment.tail = ".evil.example/shibboleth"
    target.append(comment)
    attacked = attacks.serialize(root, declaration=True)
    # What a reader of the raw document would take as the SP's name:
    assert _tree(attacked).findall(f".//{name}")[1].text == "https://sp1.example.edu.my"
    root = verify_metadata(attacked, anchor)
    assert root.findall(f".//{name}")[1].text == squatter
    assert not list(root.iter(etree.Comment))


def test_comments_canonicalization_refused(federation, anchor):
    """ "With comments" c14n: what a reader reads must be what was signed."""
    for c14n in ("exclusive-with-comments", "inclusive-with-comments"):
        document = make_aggregate(2, signer=federation, c14n=c14n)
        assert attacks.plain_libxmlsec_accepts(document, federation[1])
        _refused(document, anchor, r"canonicalization .* not allowed in a metadata")


def test_comment_inside_the_entity_id_attribute_is_not_xml(aggregate, anchor):
    attacked = aggregate.replace(
        b'entityID="https://sp1.example.edu.my',
        b'entityID="https://sp1<!---->.example.edu.my',
    )
    _refused(attacked, anchor, r"^metadata refused: not well-formed XML")


# --------------------------------------------------------------------------
# Interoperability with the xmlsec1 binary


def _xmlsec1(
    tmp_path: Path, *args: str, document: bytes
) -> subprocess.CompletedProcess:
    source = tmp_path / "in.xml"
    source.write_bytes(document)
    return subprocess.run(
        [XMLSEC1, *args, str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_xmlsec1
@pytest.mark.parametrize("reference", ["whole", "id"])
def test_signed_by_xmlsec1_verifies(federation, anchors, tmp_path, reference):
    """A federation signing with the xmlsec1 command line (inclusive c14n, as
    its template says) is verified in-process."""
    unsigned = make_aggregate(3)
    root = _tree(unsigned)
    uri = "" if reference == "whole" else f"#{root.get('ID')}"
    c14n = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
    template = etree.fromstring(
        f'<ds:Signature xmlns:ds="{DS}"><ds:SignedInfo>'
        f'<ds:CanonicalizationMethod Algorithm="{c14n}"/>'
        f'<ds:SignatureMethod Algorithm="{RSA_SHA256}"/>'
        f'<ds:Reference URI="{uri}"><ds:Transforms>'
        f'<ds:Transform Algorithm="{attacks.ENVELOPED}"/>'
        f'<ds:Transform Algorithm="{c14n}"/></ds:Transforms>'
        f'<ds:DigestMethod Algorithm="{attacks.SHA256}"/><ds:DigestValue/>'
        "</ds:Reference></ds:SignedInfo><ds:SignatureValue/></ds:Signature>"
    )
    root.insert(0, template)
    output = tmp_path / "signed.xml"
    done = _xmlsec1(
        tmp_path,
        "--sign",
        "--privkey-pem",
        federation[0],
        "--id-attr:ID",
        "urn:oasis:names:tc:SAML:2.0:metadata:EntitiesDescriptor",
        "--output",
        str(output),
        document=attacks.serialize(root, declaration=True),
    )
    assert done.returncode == 0, done.stderr
    signed = output.read_bytes()
    assert verify_metadata(signed, anchors["certificate"]).tag == MD_ENTITIES
    _refused(
        signed.replace(b"sp2.example", b"sp9.example"),
        anchors["certificate"],
        "altered",
    )


@needs_xmlsec1
def test_signed_here_verifies_with_xmlsec1(aggregate, federation, tmp_path):
    def xmlsec1_verify(document: bytes) -> int:
        return _xmlsec1(
            tmp_path,
            "--verify",
            "--pubkey-cert-pem",
            federation[1],
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:metadata:EntitiesDescriptor",
            document=document,
        ).returncode

    assert xmlsec1_verify(aggregate) == 0
    assert xmlsec1_verify(aggregate.replace(b"sp2.example", b"sp9.example")) != 0


# --------------------------------------------------------------------------
# Bad input


def test_hostile_or_wrong_documents_refused(anchors, federation):
    anchor = anchors["certificate"]
    signed = make_aggregate(1, signer=federation)
    doctype = attacks.add_doctype(signed, "<!DOCTYPE x [<!ENTITY e 'x'>]>")
    _refused(doctype, anchor, r"^metadata refused: a DOCTYPE is not allowed")
    _refused(b"not xml", anchor, r"^metadata refused: not well-formed XML")
    _refused(signed, anchor, r"^metadata is .*; the limit is", max_bytes=1024)
    response = sign_metadata(
        f'<samlp:Response xmlns:samlp="{attacks.SAMLP}" ID="_r1"/>'.encode(),
        federation[0],
    )
    _refused(response, anchor, r"document element is \{.*\}Response, not md:")
    with pytest.raises(MetadataSignatureError, match="must be bytes"):
        verify_metadata(signed.decode(), anchor)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Trust anchors


def test_parse_anchor_certificates(federation, attacker):
    both = parse_anchor(_pem(federation[1]) + "\n" + _pem(attacker[1]))
    assert len(both.certificates) == 2
    assert both.fingerprints == ()
    assert parse_anchor(both.to_text()) == both
    line = both.describe()
    assert "\n" not in line
    assert _colons(_sha256(federation[1])) in line
    assert "CN=federation.example.org" in line
    assert "valid until" in line


def test_parse_anchor_fingerprints(federation):
    digest = _sha256(federation[1])
    for text in (
        digest,
        digest.upper(),
        _colons(digest).upper(),
        f"SHA256:{_colons(digest)}",
        f"sha256={digest}",
        f"  {_colons(digest).replace(':', ' ')}\n",
    ):
        assert parse_anchor(text) == TrustAnchor(fingerprints=(digest,)), text
    two = parse_anchor(f"{digest}, {'ab' * 32}")
    assert two.fingerprints == (digest, "ab" * 32)
    assert two.describe() == (
        f"SHA-256 fingerprint {_colons(digest)}; SHA-256 fingerprint {_colons('ab' * 32)}"
    )
    mixed = parse_anchor(_pem(federation[1]) + digest)
    assert mixed.certificates and mixed.fingerprints == (digest,)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "trust anchor is empty"),
        ("hello", "neither a PEM certificate nor a SHA-256 fingerprint"),
        ("ab" * 20, "SHA-1 fingerprint"),
        ("ab" * 31, "neither a PEM certificate"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
            "does not parse",
        ),
        ("-----BEGIN CERTIFICATE-----\nMIIB", "incomplete PEM block"),
        (
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
            "PEM PUBLIC KEY",
        ),
    ],
)
def test_parse_anchor_refuses(text, match):
    with pytest.raises(MetadataSignatureError, match=match) as caught:
        parse_anchor(text)
    assert "\n" not in str(caught.value)


def test_parse_anchor_refuses_a_private_key(federation):
    with pytest.raises(MetadataSignatureError, match="holds a private key"):
        parse_anchor(Path(federation[0]).read_text() + _pem(federation[1]))


def test_trust_anchor_checks_its_fields():
    with pytest.raises(MetadataSignatureError, match="64 lowercase hex"):
        TrustAnchor(fingerprints=("AB:CD",))
    with pytest.raises(MetadataSignatureError, match="not a readable PEM"):
        TrustAnchor(certificates=("not a certificate",))
    assert not TrustAnchor()
    assert TrustAnchor().describe() == "no trust anchor"


def test_signed_by_pysaml2_verifies(federation, anchors):
    """An aggregate signed by pysaml2's own metadata signer (``entities_descriptor``
    with ``sign=True``, as ``make_metadata.py`` does) is accepted."""
    from saml2.config import SPConfig
    from saml2.metadata import entities_descriptor, entity_descriptor
    from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

    from idp.saml.crypto import make_security_context
    from tests.saml_metadata import sp_conf, sp_key_files

    descriptors = [
        entity_descriptor(
            SPConfig().load(sp_conf(f"https://sp{i}.example.org/sp", *sp_key_files()))
        )
        for i in range(2)
    ]
    _, signed = entities_descriptor(
        descriptors,
        0,
        "federation",
        "_pysaml2-aggregate",
        True,
        make_security_context(*federation),
        SIG_RSA_SHA256,
        DIGEST_SHA256,
    )
    for anchor in anchors.values():
        root = verify_metadata(signed.encode(), anchor)
        assert len(root.findall(MD_ENTITY)) == 2


@pytest.mark.parametrize(
    ("algorithm", "body"),
    [(attacks.XPATH, attacks.XPATH_BOMB), (attacks.XSLT, attacks.XSLT_BOMB)],
    ids=["xpath", "xslt"],
)
def test_saml_13_hostile_transform_in_a_metadata_signature(
    aggregate, anchor, algorithm, body
):
    """SAML-13: a CPU-bomb transform in the aggregate's Reference is refused by
    the allow-list before libxmlsec would run it (minutes if it did)."""
    attacked = attacks.add_transform(aggregate, algorithm, body)
    _refused(attacked, anchor, r"transform .* is not allowed in a metadata signature")


def test_anchor_with_certificates_and_fingerprints(federation, attacker):
    """Either kind of an anchor holding both may verify the document."""
    by_fingerprint = parse_anchor(_pem(attacker[1]) + _sha256(federation[1]))
    by_certificate = parse_anchor(_pem(federation[1]) + _sha256(attacker[1]))
    with_key_info = make_aggregate(2, signer=federation)
    without = make_aggregate(2, signer=federation, key_info=False)
    assert verify_metadata(with_key_info, by_fingerprint).tag == MD_ENTITIES
    assert verify_metadata(with_key_info, by_certificate).tag == MD_ENTITIES
    assert verify_metadata(without, by_certificate).tag == MD_ENTITIES
    _refused(without, by_fingerprint, r"does not verify with the trust anchor's key")


@pytest.mark.parametrize(
    ("reference", "c14n"),
    [("whole", "exclusive"), ("id", "inclusive")],
    ids=["uri-empty", "inclusive-c14n"],
)
def test_saml_messages_keep_their_stricter_profile(federation, reference, c14n):
    """What metadata may use (``URI=""``, inclusive c14n) stays refused on SAML
    messages: the metadata profile did not widen the message verifier."""
    from idp.saml.crypto import SignatureError, XmlsecBackend
    from idp.saml.xml import parse_xml

    message = (
        f'<samlp:LogoutResponse xmlns:samlp="{attacks.SAMLP}" '
        f'xmlns:saml="{attacks.ASSERTION}" ID="_lr-0001" Version="2.0" '
        'IssueInstant="2026-11-25T00:00:00Z" InResponseTo="_req-1">'
        "<saml:Issuer>https://sp.example.org/sp</saml:Issuer><samlp:Status>"
        '<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/>'
        "</samlp:Status></samlp:LogoutResponse>"
    ).encode()
    node_name = "urn:oasis:names:tc:SAML:2.0:protocol:LogoutResponse"
    backend = XmlsecBackend()
    control = sign_metadata(message, federation[0])
    assert backend.verify_root(parse_xml(control), node_name, [_pem(federation[1])])
    signed = sign_metadata(message, federation[0], reference=reference, c14n=c14n)
    assert attacks.plain_libxmlsec_accepts(signed, federation[1])
    with pytest.raises(SignatureError):
        backend.verify_root(parse_xml(signed), node_name, [_pem(federation[1])])
    with pytest.raises(SignatureError):
        backend.validate_signature(signed, federation[1], "pem", node_name, "_lr-0001")


def test_weak_signer_keys_refused(tmp_path):
    """An RSA-1024 signer is refused as an anchor certificate, and when a
    fingerprint anchor names it, at verification."""
    from idp.saml.keys import make_pem_pair, write_private_key

    key_pem, cert_pem = make_pem_pair("weak.example.org", key_size=1024)
    key_file, cert_file = tmp_path / "weak.key", tmp_path / "weak.crt"
    write_private_key(key_file, key_pem)
    cert_file.write_bytes(cert_pem)
    with pytest.raises(MetadataSignatureError, match="1024-bit RSA key; at least 2048"):
        parse_anchor(cert_pem.decode())
    document = make_aggregate(1, signer=(str(key_file), str(cert_file)))
    _refused(
        document,
        parse_anchor(_sha256(str(cert_file))),
        r"fingerprint names has a 1024-bit RSA key",
    )


def _mutated(rng: random.Random, document: bytes) -> bytes:
    data = bytearray(document)
    for _ in range(rng.randint(1, 3)):
        position = rng.randrange(len(data))
        kind = rng.random()
        if kind < 0.3:
            data[position] = rng.choice(b'<>"=:/ &#;-_aZ09\x00\xff')
        elif kind < 0.6:
            del data[position : position + rng.randint(1, 40)]
        else:
            start = rng.randrange(len(document))
            data[position:position] = document[start : start + rng.randint(1, 300)]
    return bytes(data)


def test_mutated_metadata_refused_with_one_line(federation, anchors):
    """Damaged documents (bytes flipped, cut, repeated), as received and
    re-signed after the damage so the checks past the signature run too,
    end in a MetadataSignatureError or a verified tree, never another
    exception.  (Fuzzing this found a C14NError and an X.509 version error
    escaping from the refusal's diagnosis.)"""
    rng = random.Random(14)
    signed = make_aggregate(2, signer=federation)
    unsigned = make_aggregate(2)
    for case in range(300):
        if case % 3:
            document = _mutated(rng, signed)
        else:
            try:
                document = sign_metadata(
                    _mutated(rng, unsigned),
                    federation[0],
                    reference=rng.choice(["id", "whole"]),
                    c14n=rng.choice(["exclusive", "inclusive"]),
                    cert_file=federation[1],
                )
            except (etree.XMLSyntaxError, xmlsec.Error, ValueError):
                continue
        for anchor in anchors.values():
            try:
                root = verify_metadata(document, anchor)
            except MetadataSignatureError as exc:
                assert "\n" not in str(exc)
            else:
                assert root.tag in (MD_ENTITIES, MD_ENTITY)


def test_mutated_anchor_text_refused_with_one_line(federation):
    """An operator's damaged paste of a certificate gives a one-line refusal
    or an anchor, never another exception (fuzzing found a certificate
    whose key algorithm cryptography does not know escaping)."""
    pem = _pem(federation[1])
    rng = random.Random(5)
    for _ in range(1000):
        text = list(pem)
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(text))
            kind = rng.random()
            if kind < 0.4:
                text[position] = rng.choice("ABCxyz019+/=:-\n ,")
            elif kind < 0.7:
                del text[position : position + rng.randint(1, 30)]
            else:
                start = rng.randrange(len(pem))
                text[position:position] = pem[start : start + rng.randint(1, 60)]
        try:
            anchor = parse_anchor("".join(text))
        except MetadataSignatureError as exc:
            assert "\n" not in str(exc)
        else:
            assert anchor


def test_verified_metadata_names_the_signer(federation, attacker):
    """Which of the anchor's keys signed, for the audit record and for a
    partner's key rollover (old and new certificate both in the anchor)."""
    from idp.saml.metadata_signature import verified_metadata

    rollover = parse_anchor(_pem(attacker[1]) + _pem(federation[1]))
    for signer in (federation, attacker):
        result = verified_metadata(make_aggregate(1, signer=signer), rollover)
        assert result.signer == _sha256(signer[1])
        assert result.algorithm == RSA_SHA256
        assert result.root.tag == MD_ENTITIES
