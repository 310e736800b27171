"""SAML's XML: the namespaces, and parsing a message as hostile input.

Every module of ``idp.saml`` names its namespaces from here. A message from
outside becomes a tree only through :func:`parse_xml` (or
:func:`parse_document`): no DTD, entities or network, and any DOCTYPE
refused (SAML-14). This module needs lxml alone, not pysaml2, so that
``idp-admin`` commands reading SP metadata stay light.
"""

from __future__ import annotations

import threading

from lxml import etree

SAMLP_NS = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML_NS = "urn:oasis:names:tc:SAML:2.0:assertion"
MD_NS = "urn:oasis:names:tc:SAML:2.0:metadata"
MDUI_NS = "urn:oasis:names:tc:SAML:metadata:ui"
MDATTR_NS = "urn:oasis:names:tc:SAML:metadata:attribute"
REMD_NS = "http://refeds.org/metadata"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XENC_NS = "http://www.w3.org/2001/04/xmlenc#"
XML_NS = "http://www.w3.org/XML/1998/namespace"
XS_NS = "http://www.w3.org/2001/XMLSchema"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
XINCLUDE_NS = "http://www.w3.org/2001/XInclude"


class XmlRefused(ValueError):
    """An XML message this IdP will not read (DOCTYPE, not well-formed...)."""


_parsers = threading.local()


def parser() -> etree.XMLParser:
    """This thread's parser: no entities, network, DTD or default attributes."""
    # lxml parsers must not be shared between threads.
    found = getattr(_parsers, "parser", None)
    if found is None:
        found = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            attribute_defaults=False,
            huge_tree=False,
            remove_blank_text=False,
        )
        _parsers.parser = found
    return found


def parse_document(document: str | bytes) -> tuple[etree._Element, bool]:
    """Parse XML text without entities, network or DTDs; refuse any DOCTYPE.

    Returns the root element and whether the text had an XML declaration
    (for :func:`serialize`). Raises :class:`XmlRefused` with a one-line
    reason.
    """
    if isinstance(document, str):
        document = document.encode("utf-8")
    if not isinstance(document, bytes | bytearray):
        raise XmlRefused(f"expected XML text, got {type(document).__name__}")
    data = bytes(document)
    try:
        root = etree.fromstring(data, parser())
    except etree.XMLSyntaxError as exc:
        raise XmlRefused(f"not well-formed XML: {exc}") from exc
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise XmlRefused("a DOCTYPE is not allowed in SAML messages")
    has_declaration = data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<?xml")
    return root, has_declaration


def parse_xml(data: bytes) -> etree._Element:
    """Parse a SAML message as hostile input: no DTD, entities or network.

    Raises :class:`XmlRefused` with a one-line reason.
    """
    root, _ = parse_document(data)
    return root


def serialize(root: etree._Element, declaration: bool) -> str:
    """The whole document of ``root`` as text, with its declaration if it had one."""
    return etree.tostring(
        root.getroottree(), encoding="UTF-8", xml_declaration=declaration
    ).decode("utf-8")
