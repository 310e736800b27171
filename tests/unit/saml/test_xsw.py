"""SAML-01..08: XML Signature Wrapping against the ``XmlsecBackend`` verifiers.

Each shape of tests/saml_attacks.py (Somorovsky et al. 2012, as SAML Raider
builds them) is applied to a signed AuthnRequest and a signed LogoutRequest
made by pysaml2's own SP client, and to signed SP metadata (an
EntityDescriptor and an EntitiesDescriptor aggregate made by pysaml2's
metadata signers).  ``validate_signature`` is asked about the element a
relying party reads: the document element's ID after the attack (what
pysaml2's ``_check_signature`` passes); for metadata also with no node ID,
which is how pysaml2's ``MetadataStore`` verifies.  The requests also go
through ``verify_root``, the path idp.saml.requests takes.

Every refusal is paired with the untouched signed fixture, accepted by the
same call.  For the shapes that fool a verifier without the backend's
structure rules (XSW2..XSW5 on a root-signed message), the test also shows
that plain libxmlsec, following the Reference, accepts the attacked
document: the refusal comes from the backend's rules, not from a broken
document.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree
from saml2.config import SPConfig
from saml2.metadata import (
    entities_descriptor,
    entity_descriptor,
    sign_entity_descriptor,
)
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from idp.saml.crypto import SignatureError, XmlsecBackend, make_security_context
from idp.saml.xml import parse_xml
from tests import saml_attacks as attacks
from tests.saml_attacks import XSW_CASES
from tests.saml_metadata import sp_conf

SP = "https://sp.example.org/sp"
OTHER_SP = "https://other.example.org/sp"
IDP = "https://idp.test/saml/idp"
SSO = "https://idp.test/saml/sso"
SLO = "https://idp.test/saml/slo"
VICTIM = "alice-persistent-0001"

EVIL_ACS = "https://evil.example/acs"
EVIL_NAME_ID = "bob-persistent-0002"
EVIL_ENTITY_ID = "https://evil.example/sp"

AUTHN_REQUEST = "urn:oasis:names:tc:SAML:2.0:protocol:AuthnRequest"
LOGOUT_REQUEST = "urn:oasis:names:tc:SAML:2.0:protocol:LogoutRequest"
ENTITY_DESCRIPTOR = "urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor"
ENTITIES_DESCRIPTOR = "urn:oasis:names:tc:SAML:2.0:metadata:EntitiesDescriptor"
MD_ENTITY = f"{{{attacks.MD}}}EntityDescriptor"
DS_SIGNATURE = f"{{{attacks.DS}}}Signature"
DS_KEY_INFO = f"{{{attacks.DS}}}KeyInfo"
DS_OBJECT = f"{{{attacks.DS}}}Object"
SAMLP_EXTENSIONS = f"{{{attacks.SAMLP}}}Extensions"
MD_EXTENSIONS = f"{{{attacks.MD}}}Extensions"

# Shapes plain libxmlsec accepts on a root-signed request (it follows the
# Reference to the unsigned copy of the original).  XSW1/XSW6 hide the copy
# inside the Signature, which the enveloped transform then cuts away;
# XSW7/XSW8 duplicate the ID and libxml2 resolves it to its first holder,
# the root, whose content the attack changed.
DEFEATS_PLAIN_LIBXMLSEC = {"SAML-02", "SAML-03", "SAML-04", "SAML-05"}


# --------------------------------------------------------------------------
# Fixtures


@dataclass(frozen=True)
class Signed:
    """A signed fixture, how to alter it, and how a verifier is asked."""

    xml: bytes
    node_name: str
    cert_file: str
    mutate: attacks.Mutator
    evil: str  # the value the attack plants
    no_node_id: bool = False  # verify like pysaml2's MetadataStore
    via_verify_root: bool = False  # XmlsecBackend.verify_root, as idp.saml.requests

    def node_id(self, document: bytes) -> str | None:
        return None if self.no_node_id else attacks.root_id(document)


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xsw-keys")


@pytest.fixture(scope="module")
def sp_keys(keys_dir: Path) -> tuple[str, str]:
    return attacks.write_key_pair(keys_dir, "sp")


@pytest.fixture(scope="module")
def federation_keys(keys_dir: Path) -> tuple[str, str]:
    return attacks.write_key_pair(keys_dir, "federation")


@pytest.fixture(scope="module")
def client(sp_keys):
    return attacks.make_sp_client(SP, *sp_keys)


@pytest.fixture(scope="module")
def authn_request(client) -> bytes:
    return attacks.signed_authn_request(client, SSO)


@pytest.fixture(scope="module")
def logout_request(client) -> bytes:
    return attacks.signed_logout_request(client, SLO, IDP, VICTIM)


def _sp_config(entity_id: str, key_file: str, cert_file: str) -> SPConfig:
    return SPConfig().load(sp_conf(entity_id, key_file, cert_file, slo_binding=None))


@pytest.fixture(scope="module")
def signed_metadata(sp_keys, federation_keys) -> tuple[bytes, bytes]:
    """(EntityDescriptor signed by the SP, aggregate signed by the federation).

    Both signed by pysaml2's metadata signers through our backend; the
    aggregate holds the signed EntityDescriptor and an unsigned one.
    """
    sp_sec = make_security_context(*sp_keys)
    descriptor, descriptor_xml = sign_entity_descriptor(
        entity_descriptor(_sp_config(SP, *sp_keys)),
        "_ed-0001",
        sp_sec,
        SIG_RSA_SHA256,
        DIGEST_SHA256,
    )
    other = entity_descriptor(_sp_config(OTHER_SP, *sp_keys))
    other.id = "_ed-0002"
    _, aggregate_xml = entities_descriptor(
        [descriptor, other],
        0,
        "federation",
        "_agg-0001",
        True,
        make_security_context(*federation_keys),
        SIG_RSA_SHA256,
        DIGEST_SHA256,
    )
    return descriptor_xml.encode("utf-8"), aggregate_xml.encode("utf-8")


def _evil_entity_id(element: etree._Element) -> None:
    """entityID of the EntityDescriptor (an aggregate's first one)."""
    target = element if element.tag == MD_ENTITY else next(element.iter(MD_ENTITY))
    target.set("entityID", EVIL_ENTITY_ID)


FIXTURES = [
    "authn-request",
    "logout-request",
    "authn-request-verify-root",
    "logout-request-verify-root",
    "entity-descriptor",
    "entity-descriptor-no-node-id",
    "entities-descriptor",
    "entities-descriptor-no-node-id",
]


@pytest.fixture(params=FIXTURES)
def signed(
    request, authn_request, logout_request, signed_metadata, sp_keys, federation_keys
) -> Signed:
    descriptor, aggregate = signed_metadata
    sp_cert, federation_cert = sp_keys[1], federation_keys[1]
    no_node_id = request.param.endswith("-no-node-id")
    via_verify_root = request.param.endswith("-verify-root")
    kind = request.param.removesuffix("-no-node-id").removesuffix("-verify-root")
    if kind == "authn-request":
        return Signed(
            authn_request,
            AUTHN_REQUEST,
            sp_cert,
            attacks.set_attribute("AssertionConsumerServiceURL", EVIL_ACS),
            EVIL_ACS,
            via_verify_root=via_verify_root,
        )
    if kind == "logout-request":
        return Signed(
            logout_request,
            LOGOUT_REQUEST,
            sp_cert,
            attacks.set_name_id(EVIL_NAME_ID),
            EVIL_NAME_ID,
            via_verify_root=via_verify_root,
        )
    if kind == "entity-descriptor":
        return Signed(
            descriptor,
            ENTITY_DESCRIPTOR,
            sp_cert,
            _evil_entity_id,
            EVIL_ENTITY_ID,
            no_node_id,
        )
    return Signed(
        aggregate,
        ENTITIES_DESCRIPTOR,
        federation_cert,
        _evil_entity_id,
        EVIL_ENTITY_ID,
        no_node_id,
    )


# --------------------------------------------------------------------------
# Helpers


def _verify(
    signed: Signed, document: bytes, backend: XmlsecBackend | None = None
) -> bool:
    backend = backend or XmlsecBackend()
    if signed.via_verify_root:
        # The IdP's own request path: defused parse, then the root's signature
        # with the registered PEM certificates.
        pem = Path(signed.cert_file).read_text()
        algorithm = backend.verify_root(parse_xml(document), signed.node_name, [pem])
        return bool(algorithm)
    return backend.validate_signature(
        document, signed.cert_file, "pem", signed.node_name, signed.node_id(document)
    )


_plain_libxmlsec_accepts = attacks.plain_libxmlsec_accepts


def _check_refused(signed: Signed, saml_id: str) -> None:
    # Control: the untouched fixture passes the very same call.
    assert _verify(signed, signed.xml) is True
    attacked = attacks.ALL[saml_id](signed.xml, signed.mutate)
    assert signed.evil.encode() in attacked
    assert signed.evil.encode() not in signed.xml
    attacks.parse(attacked)  # well-formed
    is_request = signed.node_name in (AUTHN_REQUEST, LOGOUT_REQUEST)
    if is_request and saml_id in DEFEATS_PLAIN_LIBXMLSEC:
        assert _plain_libxmlsec_accepts(attacked, signed.cert_file)
    try:
        _verify(signed, attacked)
    except SignatureError:
        return
    asked = "verify_root" if signed.via_verify_root else "validate_signature"
    pytest.fail(
        f"{saml_id} accepted by {asked}: {signed.node_name} asked with node_id="
        f"{signed.node_id(attacked)!r}; the document element is "
        f"ID={attacks.root_id(attacked)!r} and carries {signed.evil!r}"
    )


# --------------------------------------------------------------------------
# SAML-01..08


@pytest.mark.parametrize("shape", XSW_CASES)
def test_xsw_shape_refused(signed, shape):
    """SAML-01..08: each shape refused by the verifier that accepts the original."""
    _check_refused(signed, shape)


def test_wrapped_requests_also_refused_when_asked_about_the_signed_id(
    authn_request, logout_request, sp_keys
):
    """A verifier asked about the ID the signature names (not the root's)
    either finds an unsigned copy or a signature over the altered root.

    XSW3/XSW4 are left out: there the ID the signature names is the nested,
    untouched original, which really is validly signed; reading anything but
    that element is the caller's mistake (SECURITY.md: read only the
    verified element).
    """
    backend = XmlsecBackend()
    for document, node_name, mutate in (
        (authn_request, AUTHN_REQUEST, attacks.set_issuer(EVIL_ENTITY_ID)),
        (logout_request, LOGOUT_REQUEST, attacks.set_name_id(EVIL_NAME_ID)),
    ):
        signed_id = attacks.signed_id(document)
        assert backend.validate_signature(
            document, sp_keys[1], "pem", node_name, signed_id
        )
        for saml_id, shape in attacks.ALL.items():
            if saml_id in ("SAML-03", "SAML-04"):
                continue
            with pytest.raises(SignatureError):
                backend.validate_signature(
                    shape(document, mutate), sp_keys[1], "pem", node_name, signed_id
                )


# --------------------------------------------------------------------------
# The generator builds what its docstrings say


def _children(element: etree._Element) -> list[etree._Element]:
    return [c for c in element if isinstance(c.tag, str)]


def _signature(element: etree._Element) -> etree._Element | None:
    return next((c for c in element if c.tag == DS_SIGNATURE), None)


def _mutate(element: etree._Element) -> None:
    element.set("AssertionConsumerServiceURL", EVIL_ACS)


def test_generator_xsw1_and_xsw2_shapes(authn_request):
    original = attacks.parse(authn_request)
    ident = original.get("ID")
    for shape, inside in ((attacks.xsw1, True), (attacks.xsw2, False)):
        root = attacks.parse(shape(authn_request, _mutate))
        assert root.get("ID") == f"_evil_{ident}"
        assert root.get("AssertionConsumerServiceURL") == EVIL_ACS
        signature = _signature(root)
        [copy] = [e for e in root.iter(root.tag) if e is not root]
        assert copy.get("ID") == ident
        assert _signature(copy) is None
        assert copy.get("AssertionConsumerServiceURL") == original.get(
            "AssertionConsumerServiceURL"
        )
        if inside:
            assert copy.getparent() is signature
            assert _children(signature)[-1] is copy
        else:
            assert copy.getparent() is root
            assert copy.getnext() is signature


def test_generator_xsw3_and_xsw4_root_variants(authn_request):
    ident = attacks.root_id(authn_request)
    for shape, position in ((attacks.xsw3, 0), (attacks.xsw4, -1)):
        root = attacks.parse(shape(authn_request, _mutate, new_id="_wrapper"))
        assert root.get("ID") == "_wrapper"
        assert root.get("AssertionConsumerServiceURL") == EVIL_ACS
        assert _signature(root) is None
        nested = _children(root)[position]
        assert nested.tag == root.tag
        assert nested.get("ID") == ident
        assert _signature(nested) is not None


def test_generator_xsw5_and_xsw6_root_variants(authn_request):
    ident = attacks.root_id(authn_request)
    five = attacks.parse(attacks.xsw5(authn_request, _mutate))
    assert five.get("ID") == f"_evil_{ident}"
    assert _signature(five) is not None
    assert _children(five)[-1].get("ID") == ident
    assert _signature(_children(five)[-1]) is None

    six = attacks.parse(attacks.xsw6(authn_request, _mutate))
    assert six.get("ID") == f"_evil_{ident}"
    key_info = _signature(six).find(DS_KEY_INFO)
    assert _children(key_info)[-1].get("ID") == ident
    assert _children(key_info)[-1].tag == six.tag


def test_generator_xsw7_and_xsw8_keep_the_id(authn_request):
    ident = attacks.root_id(authn_request)
    seven = attacks.parse(attacks.xsw7(authn_request, _mutate))
    assert seven.get("ID") == ident
    assert seven.get("AssertionConsumerServiceURL") != EVIL_ACS
    extensions = seven.find(SAMLP_EXTENSIONS)
    assert extensions.getprevious().tag == DS_SIGNATURE
    [evil] = _children(extensions)
    assert (evil.get("ID"), evil.get("AssertionConsumerServiceURL")) == (
        ident,
        EVIL_ACS,
    )
    assert _signature(evil) is None

    eight = attacks.parse(attacks.xsw8(authn_request, _mutate))
    assert eight.get("ID") == ident
    assert eight.get("AssertionConsumerServiceURL") == EVIL_ACS
    [obj] = _signature(eight).findall(DS_OBJECT)
    [copy] = _children(obj)
    assert copy.get("ID") == ident
    assert copy.get("AssertionConsumerServiceURL") != EVIL_ACS


def test_generator_child_shapes_on_an_aggregate(signed_metadata):
    """In an aggregate the signed EntityDescriptor plays SAML's Assertion."""
    _, aggregate = signed_metadata
    child_id = "_ed-0001"
    three = attacks.parse(attacks.xsw3(aggregate, _evil_entity_id))
    entities = three.findall(MD_ENTITY)
    assert [e.get("ID") for e in entities[:2]] == [f"_evil_{child_id}", child_id]
    assert entities[0].get("entityID") == EVIL_ENTITY_ID
    assert _signature(entities[0]) is None

    four = attacks.parse(attacks.xsw4(aggregate, _evil_entity_id))
    wrapper = four.findall(MD_ENTITY)[-1]
    assert wrapper.get("ID") == f"_evil_{child_id}"
    assert _children(wrapper)[-1].get("ID") == child_id

    seven = attacks.parse(attacks.xsw7(aggregate, _evil_entity_id))
    extensions = seven.find(MD_EXTENSIONS)
    assert extensions.getnext().get("ID") == child_id
    assert _children(extensions)[0].get("ID") == child_id

    eight = attacks.parse(attacks.xsw8(aggregate, _evil_entity_id))
    signed_child = eight.find(MD_ENTITY)
    assert signed_child.get("entityID") == EVIL_ENTITY_ID
    assert _signature(signed_child).find(DS_OBJECT)[0].get("ID") == child_id


def test_generator_leaves_its_input_alone(authn_request):
    before = bytes(authn_request)
    for shape in attacks.ALL.values():
        shape(authn_request, _mutate)
    assert authn_request == before
    assert set(attacks.ALL) == {f"SAML-0{n}" for n in range(1, 9)}
    assert attacks.SHAPES["XSW7"] is attacks.ALL["SAML-07"]


def test_generator_needs_a_root_signature(authn_request):
    unsigned = attacks.strip_signature(authn_request)
    for shape in attacks.ALL.values():
        with pytest.raises(ValueError, match="no enveloped ds:Signature"):
            shape(unsigned, _mutate)


def test_attacked_post_fields(authn_request, sp_keys):
    fields = attacks.attacked_post_fields(authn_request, "SAML-02", _mutate)
    assert set(fields) == {"SAMLRequest"}
    assert base64.b64decode(fields["SAMLRequest"]) == attacks.xsw2(
        authn_request, _mutate
    )
    by_name = attacks.attacked_post_fields(
        authn_request, "xsw2", _mutate, relay_state="state-1"
    )
    assert by_name == {**fields, "RelayState": "state-1"}
    assert attacks.attacked_post_fields(authn_request, attacks.xsw2, _mutate) == fields
    with pytest.raises(KeyError):
        attacks.attacked_post_fields(authn_request, "SAML-09", _mutate)

    logout_response = attacks.sign(
        (
            f'<samlp:LogoutResponse xmlns:samlp="{attacks.SAMLP}" '
            f'xmlns:saml="{attacks.ASSERTION}" ID="_lr-0001" Version="2.0" '
            'IssueInstant="2026-11-25T00:00:00Z" InResponseTo="_req-1">'
            f"<saml:Issuer>{SP}</saml:Issuer><samlp:Status><samlp:StatusCode "
            'Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>'
            "</samlp:LogoutResponse>"
        ).encode(),
        sp_keys[0],
    )
    assert XmlsecBackend().validate_signature(
        logout_response,
        sp_keys[1],
        "pem",
        "urn:oasis:names:tc:SAML:2.0:protocol:LogoutResponse",
        "_lr-0001",
    )
    fields = attacks.attacked_post_fields(
        logout_response, "SAML-05", attacks.set_issuer(EVIL_ENTITY_ID)
    )
    assert set(fields) == {"SAMLResponse"}
    assert EVIL_ENTITY_ID.encode() in base64.b64decode(fields["SAMLResponse"])
