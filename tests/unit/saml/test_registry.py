"""parse_sp_metadata: what an SP's metadata must be before it is registered.

The metadata under test is made by pysaml2 itself (an ``SPConfig`` turned
into an ``EntityDescriptor``), so it is what a real pysaml2 SP publishes.
Every refusal is paired with an accepted control that differs only in the
attack.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from lxml import etree
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NAMEID_FORMAT_PERSISTENT

from idp.saml.registry import default_name_id_format
from idp.saml.sp_metadata import MAX_METADATA_BYTES, MetadataError, parse_sp_metadata
from tests.saml_metadata import (
    DS,
    MD,
    SP_ENTITY_ID,
    make_sp_metadata,
    padded,
    sp_key_files,
)

AES256_GCM = "http://www.w3.org/2009/xmlenc11#aes256-gcm"
AES128_CBC = "http://www.w3.org/2001/04/xmlenc#aes128-cbc"


def pem_of(cert_file: str) -> str:
    return Path(cert_file).read_text()


# --------------------------------------------------------------------------
# What is extracted


def test_parses_an_sp_that_signs_requests_and_publishes_an_encryption_key():
    data = make_sp_metadata(
        signed_requests=True,
        encryption=True,
        encryption_methods=(AES256_GCM, AES128_CBC),
    )
    md = parse_sp_metadata(data)
    assert md.entity_id == SP_ENTITY_ID
    [acs] = md.assertion_consumer_services
    assert (acs.binding, acs.location, acs.index) == (
        BINDING_HTTP_POST,
        "https://sp.example.org/acs",
        1,
    )
    [slo] = md.single_logout_services
    assert (slo.binding, slo.location) == (
        BINDING_HTTP_REDIRECT,
        "https://sp.example.org/slo",
    )
    assert md.authn_requests_signed is True
    assert md.want_assertions_signed is True
    assert md.signing_certificates == (pem_of(sp_key_files()[1]),)
    assert md.encryption_certificates == (pem_of(sp_key_files("sp-encryption")[1]),)
    assert md.encryption_methods == (AES256_GCM, AES128_CBC)
    assert md.name_id_formats == (NAMEID_FORMAT_PERSISTENT,)
    assert md.display_names == {"ms": "Sistem Contoh", "en": "Example System"}
    # A logo without xml:lang serves both languages.
    assert md.logos == {
        "ms": "https://sp.example.org/logo.png",
        "en": "https://sp.example.org/logo.png",
    }
    assert md.valid_until is None
    with pytest.raises(AttributeError):
        md.entity_id = "https://other.example.org"  # frozen


def test_parses_an_sp_without_signed_requests_or_encryption_key():
    md = parse_sp_metadata(make_sp_metadata())
    assert md.authn_requests_signed is False
    assert md.encryption_certificates == ()
    assert md.encryption_methods == ()
    assert len(md.signing_certificates) == 1


def test_a_key_descriptor_without_use_serves_signing_and_encryption():
    root = etree.fromstring(make_sp_metadata())
    [key] = root.iter(f"{{{MD}}}KeyDescriptor")
    del key.attrib["use"]
    md = parse_sp_metadata(etree.tostring(root))
    assert md.signing_certificates == md.encryption_certificates
    assert len(md.signing_certificates) == 1


def test_acs_index_and_is_default_are_read():
    root = etree.fromstring(make_sp_metadata())
    descriptor = root.find(f"{{{MD}}}SPSSODescriptor")
    etree.SubElement(
        descriptor,
        f"{{{MD}}}AssertionConsumerService",
        Binding=BINDING_HTTP_POST,
        Location="https://sp.example.org/acs2",
        index="7",
        isDefault="true",
    )
    md = parse_sp_metadata(etree.tostring(root))
    assert [(a.index, a.is_default) for a in md.assertion_consumer_services] == [
        (1, None),
        (7, True),
    ]


def test_default_name_id_format_is_persistent_unless_only_others_listed():
    assert default_name_id_format(()) == NAMEID_FORMAT_PERSISTENT
    assert (
        default_name_id_format((NAMEID_FORMAT_EMAILADDRESS, NAMEID_FORMAT_PERSISTENT))
        == NAMEID_FORMAT_PERSISTENT
    )
    # SAML-33: listing emailAddress alone does not make the address the NameID.
    assert (
        default_name_id_format((NAMEID_FORMAT_EMAILADDRESS,))
        == NAMEID_FORMAT_PERSISTENT
    )
    transient = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
    assert default_name_id_format((NAMEID_FORMAT_EMAILADDRESS, transient)) == transient


# --------------------------------------------------------------------------
# OPS-03: size and entity caps


def test_ops_03_metadata_over_5_mib_is_refused_before_parsing():
    """OPS-03: 5 MiB + 1 byte is refused, naming the limit; 5 MiB exactly loads."""
    data = make_sp_metadata()
    at_cap = padded(data, MAX_METADATA_BYTES)
    assert len(at_cap) == MAX_METADATA_BYTES
    assert parse_sp_metadata(at_cap).entity_id == SP_ENTITY_ID
    with pytest.raises(
        MetadataError,
        match=r"^metadata is 5 MiB \(5,242,881 bytes, 1 over\); the limit is 5 MiB$",
    ):
        parse_sp_metadata(padded(data, MAX_METADATA_BYTES + 1))
    # Not XML at all: the size check answers before any parser runs.
    with pytest.raises(MetadataError, match="limit is"):
        parse_sp_metadata(b"\x00" * (MAX_METADATA_BYTES + 1))


def test_ops_03_an_aggregate_of_entity_descriptors_is_refused():
    """OPS-03: an EntitiesDescriptor, or a second EntityDescriptor, is refused."""
    one = make_sp_metadata()
    parse_sp_metadata(one)
    entities = etree.Element(f"{{{MD}}}EntitiesDescriptor", nsmap={"md": MD})
    for n in range(50):
        entities.append(
            etree.fromstring(make_sp_metadata(f"https://sp{n}.example.org/sp"))
        )
    with pytest.raises(MetadataError, match="EntitiesDescriptor"):
        parse_sp_metadata(etree.tostring(entities))
    nested = etree.fromstring(one)
    extensions = etree.SubElement(nested, f"{{{MD}}}Extensions")
    nested.insert(0, extensions)
    extensions.append(etree.fromstring(make_sp_metadata("https://b.example.org/sp")))
    with pytest.raises(MetadataError, match="more than one EntityDescriptor"):
        parse_sp_metadata(etree.tostring(nested))


# --------------------------------------------------------------------------
# Hostile or unusable metadata


def test_http_acs_is_refused_https_and_local_http_accepted_in_development():
    assert parse_sp_metadata(make_sp_metadata(acs="https://sp.example.org/acs"))
    for local in ("http://localhost:8000/acs", "http://127.0.0.1/acs"):
        md = parse_sp_metadata(make_sp_metadata(acs=local), allow_http=True)
        assert md.assertion_consumer_services[0].location == local
        with pytest.raises(MetadataError, match="only in development"):
            parse_sp_metadata(make_sp_metadata(acs=local))
    for bad in (
        "http://sp.example.org/acs",
        "http://localhost.evil.example/acs",
    ):
        with pytest.raises(MetadataError, match="another machine"):
            parse_sp_metadata(make_sp_metadata(acs=bad), allow_http=True)
    for bad in ("javascript:alert(1)", "https:///acs"):
        with pytest.raises(MetadataError, match=r"not an absolute URL|no host"):
            parse_sp_metadata(make_sp_metadata(acs=bad), allow_http=True)


def test_http_slo_is_refused():
    with pytest.raises(MetadataError, match=r"SingleLogoutService .* not https"):
        parse_sp_metadata(make_sp_metadata(slo="http://sp.example.org/slo"))


def with_doctype(data: bytes, doctype: str) -> bytes:
    return doctype.encode() + b"\n" + data


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE md:EntityDescriptor [<!ENTITY x "x">]>',
        '<!DOCTYPE md:EntityDescriptor [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
        '<!DOCTYPE md:EntityDescriptor SYSTEM "http://127.0.0.1:9/evil.dtd">',
        "<!DOCTYPE md:EntityDescriptor>",
    ],
)
def test_doctype_and_entities_are_refused(doctype):
    data = make_sp_metadata()
    assert parse_sp_metadata(data)
    with pytest.raises(MetadataError, match="DOCTYPE or entity"):
        parse_sp_metadata(with_doctype(data, doctype))


def test_billion_laughs_is_refused_quickly():
    laughs = (
        '<!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(
            f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
            for i in range(1, 10)
        )
        + "]>"
    )
    data = make_sp_metadata().replace(b'entityID="', b'entityID="&lol9;', 1)
    with pytest.raises(MetadataError, match="DOCTYPE or entity"):
        parse_sp_metadata(with_doctype(data, laughs))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<md:EntityDescriptor", "not well-formed"),
        (b"\xff\xfe<\x00a\x00/\x00>\x00", "not UTF-8"),
        (
            b'<EntityDescriptor xmlns="urn:example" entityID="x"/>',
            "not md:EntityDescriptor",
        ),
    ],
)
def test_unparseable_metadata_is_refused(data, message):
    with pytest.raises(MetadataError, match=message):
        parse_sp_metadata(data)


def test_metadata_without_a_saml2_sp_descriptor_is_refused():
    root = etree.fromstring(make_sp_metadata())
    descriptor = root.find(f"{{{MD}}}SPSSODescriptor")
    descriptor.set("protocolSupportEnumeration", "urn:oasis:names:tc:SAML:1.1:protocol")
    with pytest.raises(MetadataError, match="no SPSSODescriptor supporting"):
        parse_sp_metadata(etree.tostring(root))
    descriptor.tag = f"{{{MD}}}IDPSSODescriptor"
    with pytest.raises(MetadataError, match="no SPSSODescriptor"):
        parse_sp_metadata(etree.tostring(root))


def test_metadata_without_acs_is_refused():
    root = etree.fromstring(make_sp_metadata())
    descriptor = root.find(f"{{{MD}}}SPSSODescriptor")
    for acs in descriptor.findall(f"{{{MD}}}AssertionConsumerService"):
        descriptor.remove(acs)
    with pytest.raises(MetadataError, match="no AssertionConsumerService"):
        parse_sp_metadata(etree.tostring(root))


def test_repeated_acs_index_is_refused():
    root = etree.fromstring(make_sp_metadata())
    descriptor = root.find(f"{{{MD}}}SPSSODescriptor")
    etree.SubElement(
        descriptor,
        f"{{{MD}}}AssertionConsumerService",
        Binding=BINDING_HTTP_POST,
        Location="https://sp.example.org/other",
        index="1",
    )
    with pytest.raises(MetadataError, match="index 1 repeats"):
        parse_sp_metadata(etree.tostring(root))


def test_a_broken_certificate_is_refused():
    root = etree.fromstring(make_sp_metadata())
    cert = next(root.iter(f"{{{DS}}}X509Certificate"))
    cert.text = cert.text[:40]
    with pytest.raises(MetadataError, match="not a valid certificate"):
        parse_sp_metadata(etree.tostring(root))


@pytest.mark.parametrize(
    "entity_id", [" https://sp.example.org/sp", "https://sp.example.org/sp\t"]
)
def test_entity_id_with_surrounding_space_is_refused(entity_id):
    data = make_sp_metadata().replace(
        SP_ENTITY_ID.encode(), entity_id.encode().replace(b"\t", b"&#9;"), 1
    )
    with pytest.raises(MetadataError, match="entityID"):
        parse_sp_metadata(data)


def test_expired_metadata_is_refused_current_accepted():
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    current = make_sp_metadata(valid_until=now + dt.timedelta(seconds=1))
    assert parse_sp_metadata(current, now=now).valid_until == now + dt.timedelta(
        seconds=1
    )
    expired = make_sp_metadata(valid_until=now)
    with pytest.raises(MetadataError, match="expired at 2030-01-01 00:00:00 UTC"):
        parse_sp_metadata(expired, now=now)
    assert parse_sp_metadata(expired, now=now, allow_expired=True).valid_until == now


# --------------------------------------------------------------------------
# The parsed metadata known by its hash: an SSO's row leaves the document out


def _row(text: str, sha256: str):
    from idp.models import ServiceProvider

    return ServiceProvider(metadata_xml=text, metadata_sha256=sha256)


class _RowWithoutDocument:
    """A row as an SSO's SELECT leaves it: reading the document is counted
    (on a real row it is a statement)."""

    def __init__(self, sha256: str, text: str) -> None:
        self.metadata_sha256 = sha256
        self._text = text
        self.reads = 0

    @property
    def metadata_xml(self) -> str:
        self.reads += 1
        return self._text


def test_a_document_parsed_once_is_known_by_its_hash(monkeypatch):
    """The second row with the same hash is answered without its document."""
    import hashlib

    from idp.saml import registry

    monkeypatch.setattr(registry, "_BY_SHA256", {})
    data = make_sp_metadata("https://hash.example.org/sp")
    sha256 = hashlib.sha256(data).hexdigest()
    first_row = _RowWithoutDocument(sha256, data.decode())
    first = registry.sp_metadata(first_row)
    assert first.entity_id == "https://hash.example.org/sp"
    assert first_row.reads == 1
    row = _RowWithoutDocument(sha256, data.decode())
    assert registry.sp_metadata(row) is first
    assert row.reads == 0


def test_a_row_whose_hash_is_not_its_documents_is_never_remembered(monkeypatch):
    """SAML-30: only a hash checked against the document names a parsed copy,
    so a row claiming another document's hash does not make later rows with
    that hash get this document's keys and endpoints."""
    import hashlib

    from idp.saml import registry

    monkeypatch.setattr(registry, "_BY_SHA256", {})
    honest = make_sp_metadata("https://honest.example.org/sp")
    other = make_sp_metadata("https://other.example.org/sp")
    claimed = hashlib.sha256(honest).hexdigest()
    parsed = registry.sp_metadata(_row(other.decode(), claimed))
    assert parsed.entity_id == "https://other.example.org/sp"  # its own document
    assert claimed not in registry._BY_SHA256
    assert (
        registry.sp_metadata(_row(honest.decode(), claimed)).entity_id
        == "https://honest.example.org/sp"
    )
    assert registry._BY_SHA256[claimed].entity_id == "https://honest.example.org/sp"


def test_a_document_imported_with_a_bom_is_remembered(monkeypatch):
    """``import_sp`` hashes the bytes as sent, BOM included, and stores the
    text without it."""
    import hashlib

    from idp.saml import registry

    monkeypatch.setattr(registry, "_BY_SHA256", {})
    data = b"\xef\xbb\xbf" + make_sp_metadata("https://bom.example.org/sp")
    sha256 = hashlib.sha256(data).hexdigest()
    registry.sp_metadata(_row(data.decode("utf-8-sig"), sha256))
    assert sha256 in registry._BY_SHA256
