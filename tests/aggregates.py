"""Federation aggregates for tests and benchmarks: N SP entities, signed.

An ``md:EntitiesDescriptor`` as a federation operator publishes it: one
``md:EntityDescriptor`` per SP, each with its own https host (ACS and SLO
there), its own certificate (signing and encryption), NameID formats,
requested attributes, an entity category, and ``mdui`` names in Malay and
English; namespace declarations on the document element only, as
Shibboleth's and pyFF's aggregators write them.  :func:`sign_metadata`
signs the document element the ways federations do (``URI=""`` or
``URI="#ID"``, inclusive or exclusive c14n).

Quick use::

    from tests.aggregates import make_aggregate, federation_keys, sp_entity

    signed = make_aggregate(3, signer=federation_keys())            # 3 good SPs
    mixed = make_aggregate([sp_entity(0), sp_entity(1, acs="http://sp1.example/acs")],
                           signer=federation_keys(), reference="whole", c14n="inclusive")
    expired = sp_entity(2, valid_until=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    no_acs = sp_entity(3, mutate=lambda e: [a.getparent().remove(a) for a in
                       e.iter(f"{{{MD}}}AssertionConsumerService")])
    unsigned = make_aggregate(2)

Keys: tests share a few pre-generated 2048-bit certificates
(:func:`entity_certificates`, cycled over the entities) so that building an
aggregate costs milliseconds; ``bench/make_aggregate.py`` passes one
certificate per entity.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import xmlsec
from lxml import etree

from tests.saml_metadata import sp_key_files

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
MDUI = "urn:oasis:names:tc:SAML:metadata:ui"
MDATTR = "urn:oasis:names:tc:SAML:metadata:attribute"
NSMAP = {"md": MD, "ds": DS, "saml": SAML, "mdui": MDUI, "mdattr": MDATTR}

POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
URI_FORMAT = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
ENTITY_CATEGORY = "http://macedir.org/entity-category"
RESEARCH_AND_SCHOLARSHIP = "http://refeds.org/category/research-and-scholarship"
# (Name, FriendlyName, isRequired) an SP typically asks for.
REQUESTED = (
    ("urn:oid:0.9.2342.19200300.100.1.3", "mail", True),
    ("urn:oid:2.16.840.1.113730.3.1.241", "displayName", True),
    ("urn:oid:1.3.6.1.4.1.5923.1.1.1.6", "eduPersonPrincipalName", False),
)

_C = xmlsec.constants
RSA_SHA256 = _C.TransformRsaSha256.href
SHA256 = _C.TransformSha256.href
C14N = {
    "exclusive": _C.TransformExclC14N,
    "inclusive": _C.TransformInclC14N,
    "exclusive-with-comments": _C.TransformExclC14NWithComments,
    "inclusive-with-comments": _C.TransformInclC14NWithComments,
}
_TRANSFORMS_BY_HREF = {
    getattr(_C, name).href: getattr(_C, name)
    for name in dir(_C)
    if name.startswith("Transform") and getattr(getattr(_C, name), "href", None)
}


@functools.cache
def federation_keys(name: str = "federation") -> tuple[str, str]:
    """A federation operator's signing key pair: (key_file, cert_file), 2048-bit,
    made once per name for the whole run."""
    return sp_key_files(name)


@functools.cache
def entity_certificates(count: int = 4) -> tuple[str, ...]:
    """``count`` pre-generated SP certificates (PEM), made once per run."""
    return tuple(
        Path(sp_key_files(f"aggregate-sp-{i}")[1]).read_text() for i in range(count)
    )


def _xsdatetime(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cert_body(pem: str) -> str:
    return "".join(line for line in pem.strip().splitlines() if "-----" not in line)


@dataclass(frozen=True)
class SpEntity:
    """One SP of an aggregate; :func:`sp_entity` fills in the usual values."""

    entity_id: str
    certificate: str  # PEM, published for signing and for encryption
    acs: str
    slo: str | None = None
    name_id_formats: tuple[str, ...] = (PERSISTENT, TRANSIENT)
    requested_attributes: tuple[tuple[str, str, bool], ...] = REQUESTED
    entity_categories: tuple[str, ...] = (RESEARCH_AND_SCHOLARSHIP,)
    display_names: tuple[tuple[str, str], ...] = ()  # (lang, text)
    valid_until: dt.datetime | None = None
    id: str | None = None  # an ID attribute on the EntityDescriptor
    # Called with the finished md:EntityDescriptor, to damage it in ways the
    # fields cannot (drop the ACS, add an IdP role, break the schema).
    mutate: Callable[[etree._Element], object] | None = None


def sp_entity(
    index: int,
    *,
    certificate: str | None = None,
    host: str | None = None,
    **overrides: object,
) -> SpEntity:
    """SP number ``index``: ``https://sp{index}.example.edu.my/shibboleth`` with
    its ACS and SLO on that host; ``overrides`` replace any field of
    :class:`SpEntity` (``acs="http://..."``, ``entity_id=...``,
    ``valid_until=...``)."""
    host = host or f"sp{index}.example.edu.my"
    if certificate is None:
        pool = entity_certificates()
        certificate = pool[index % len(pool)]
    entity = SpEntity(
        entity_id=f"https://{host}/shibboleth",
        certificate=certificate,
        acs=f"https://{host}/Shibboleth.sso/SAML2/POST",
        slo=f"https://{host}/Shibboleth.sso/SLO/Redirect",
        display_names=(
            ("ms", f"Sistem Contoh {index}"),
            ("en", f"Example System {index}"),
        ),
    )
    return replace(entity, **overrides)  # type: ignore[arg-type]


def entity_element(
    entity: SpEntity, parent: etree._Element | None = None
) -> etree._Element:
    """``entity`` as an ``md:EntityDescriptor`` (a child of ``parent`` if given,
    reusing its namespace declarations)."""
    tag = f"{{{MD}}}EntityDescriptor"
    if parent is None:
        element = etree.Element(tag, nsmap=NSMAP)
    else:
        element = etree.SubElement(parent, tag)
    element.set("entityID", entity.entity_id)
    if entity.id:
        element.set("ID", entity.id)
    if entity.valid_until is not None:
        element.set("validUntil", _xsdatetime(entity.valid_until))
    if entity.entity_categories:
        extensions = etree.SubElement(element, f"{{{MD}}}Extensions")
        attributes = etree.SubElement(extensions, f"{{{MDATTR}}}EntityAttributes")
        attribute = etree.SubElement(
            attributes,
            f"{{{SAML}}}Attribute",
            Name=ENTITY_CATEGORY,
            NameFormat=URI_FORMAT,
        )
        for category in entity.entity_categories:
            etree.SubElement(attribute, f"{{{SAML}}}AttributeValue").text = category
    sp = etree.SubElement(
        element,
        f"{{{MD}}}SPSSODescriptor",
        protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol",
        AuthnRequestsSigned="false",
        WantAssertionsSigned="true",
    )
    if entity.display_names:
        ui = etree.SubElement(
            etree.SubElement(sp, f"{{{MD}}}Extensions"), f"{{{MDUI}}}UIInfo"
        )
        for lang, text in entity.display_names:
            name = etree.SubElement(ui, f"{{{MDUI}}}DisplayName")
            name.set("{http://www.w3.org/XML/1998/namespace}lang", lang)
            name.text = text
    body = _cert_body(entity.certificate)
    for use in ("signing", "encryption"):
        key = etree.SubElement(sp, f"{{{MD}}}KeyDescriptor", use=use)
        data = etree.SubElement(
            etree.SubElement(key, f"{{{DS}}}KeyInfo"), f"{{{DS}}}X509Data"
        )
        etree.SubElement(data, f"{{{DS}}}X509Certificate").text = body
    if entity.slo:
        etree.SubElement(
            sp, f"{{{MD}}}SingleLogoutService", Binding=REDIRECT, Location=entity.slo
        )
    for name_id_format in entity.name_id_formats:
        etree.SubElement(sp, f"{{{MD}}}NameIDFormat").text = name_id_format
    etree.SubElement(
        sp,
        f"{{{MD}}}AssertionConsumerService",
        Binding=POST,
        Location=entity.acs,
        index="0",
        isDefault="true",
    )
    if entity.requested_attributes:
        service = etree.SubElement(sp, f"{{{MD}}}AttributeConsumingService", index="0")
        service_name = etree.SubElement(service, f"{{{MD}}}ServiceName")
        service_name.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
        service_name.text = entity.entity_id
        for name, friendly, required in entity.requested_attributes:
            etree.SubElement(
                service,
                f"{{{MD}}}RequestedAttribute",
                Name=name,
                FriendlyName=friendly,
                NameFormat=URI_FORMAT,
                isRequired="true" if required else "false",
            )
    if entity.mutate is not None:
        entity.mutate(element)
    return element


def make_aggregate(
    entities: int | Iterable[SpEntity],
    *,
    name: str = "https://federation.example.edu.my",
    id: str = "_aggregate-0001",
    valid_until: dt.datetime | None = None,
    cache_duration: str | None = None,
    signer: tuple[str, str] | None = None,
    reference: str = "id",
    c14n: str = "exclusive",
    key_info: bool = True,
) -> bytes:
    """An ``md:EntitiesDescriptor`` of ``entities`` (a count: ``sp_entity(0..n-1)``).

    ``valid_until`` (default: 7 days from now) and ``cache_duration``
    (``"PT6H"``) go on the aggregate.  With ``signer`` (key_file, cert_file)
    it is signed by :func:`sign_metadata` with ``reference`` / ``c14n`` (and
    the signer's certificate in KeyInfo unless ``key_info`` is False);
    unsigned otherwise.
    """
    if isinstance(entities, int):
        entities = [sp_entity(i) for i in range(entities)]
    root = etree.Element(f"{{{MD}}}EntitiesDescriptor", nsmap=NSMAP)
    root.set("Name", name)
    root.set("ID", id)
    until = valid_until or dt.datetime.now(dt.UTC) + dt.timedelta(days=7)
    root.set("validUntil", _xsdatetime(until))
    if cache_duration:
        root.set("cacheDuration", cache_duration)
    for entity in entities:
        entity_element(entity, root)
    etree.indent(root, space=" ")
    document = etree.tostring(root, encoding="UTF-8", xml_declaration=True)
    if signer is None:
        return document
    key_file, cert_file = signer
    return sign_metadata(
        document,
        key_file,
        reference=reference,
        c14n=c14n,
        cert_file=cert_file if key_info else None,
    )


def sign_metadata(
    xml: bytes,
    key_file: str | Path,
    *,
    reference: str = "id",
    c14n: str = "exclusive",
    cert_file: str | Path | None = None,
    signature_method: str = RSA_SHA256,
    digest_method: str = SHA256,
) -> bytes:
    """``xml``'s document element signed with ``key_file``, as a federation signs.

    ``reference``: ``"id"`` for ``URI="#<root ID>"`` (the root must have an
    ID), ``"whole"`` for ``URI=""``, or a literal ``"#<some ID>"`` (attacks).  ``c14n``: a key of :data:`C14N`, used
    for SignedInfo and as the Reference's second transform (after
    enveloped-signature).  The signature is the root's first child, where the
    metadata schema puts it; any previous one is replaced.  ``cert_file``
    (PEM) is copied into ds:KeyInfo/ds:X509Data.
    """
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    root = etree.fromstring(xml, parser)
    for old in root.findall(f"{{{DS}}}Signature"):
        root.remove(old)
    method = C14N[c14n]
    signature = xmlsec.template.create(
        root, method, _TRANSFORMS_BY_HREF[signature_method], ns="ds"
    )
    if reference == "id":
        uri = f"#{root.get('ID')}"
    elif reference == "whole":
        uri = ""
    elif reference.startswith("#"):
        uri = reference
    else:
        raise ValueError(f"reference must be 'id', 'whole' or '#ID', not {reference!r}")
    ref = xmlsec.template.add_reference(
        signature, _TRANSFORMS_BY_HREF[digest_method], uri=uri
    )
    xmlsec.template.add_transform(ref, _C.TransformEnveloped)
    xmlsec.template.add_transform(ref, method)
    if cert_file is not None:
        key_info = xmlsec.template.ensure_key_info(signature)
        x509 = xmlsec.template.add_x509_data(key_info)
        xmlsec.template.x509_data_add_certificate(x509).text = _cert_body(
            Path(cert_file).read_text()
        )
    root.insert(0, signature)
    if uri:
        xmlsec.tree.add_ids(root, ["ID"])
    ctx = xmlsec.SignatureContext()
    ctx.key = xmlsec.Key.from_file(str(key_file), _C.KeyDataFormatPem)
    ctx.sign(signature)
    declaration = xml.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<?xml")
    return etree.tostring(
        root.getroottree(), encoding="UTF-8", xml_declaration=declaration
    )


def entities(xml: bytes) -> Sequence[etree._Element]:
    """The EntityDescriptors of an aggregate (parsed without entities or network)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    return etree.fromstring(xml, parser).findall(f"{{{MD}}}EntityDescriptor")
