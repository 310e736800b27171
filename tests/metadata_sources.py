"""Partners' metadata documents for the metadata-source tests.

``entity`` is one SP's EntityDescriptor (pysaml2's own, from
``tests.saml_metadata``) with its own key and host; ``aggregate`` wraps
entities into an ``md:EntitiesDescriptor`` as a federation publishes it;
``idp_entity`` is an entity that is not an SP. ``make_source`` adds a
source row with the policy a test names, ``apply`` applies a document at a
fixed ``NOW``.
"""

from __future__ import annotations

import datetime as dt

from lxml import etree

from idp.models import MetadataSource
from idp.saml.sources import RefreshReport, apply_document
from tests.saml_metadata import MD, sp_key_files

# pysaml2 checks validUntil against the clock, so "now" is the real one.
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
MAX_VALID = dt.timedelta(days=28)


def entity_id(name: str) -> str:
    """The entityID of the test SP ``name``: its own host, ``name.example.org``."""
    return f"https://{name}.example.org/sp"


def entity(
    name: str,
    *,
    acs: str | None = None,
    slo: str | None = None,
    key: str | None = None,
    valid_until: dt.datetime | None = None,
    encryption: bool = False,
) -> bytes:
    """SP ``name``'s EntityDescriptor: ACS and SLO on its own host by default,
    signed with key ``key`` (default: its own)."""
    from saml2.config import SPConfig
    from saml2.metadata import entity_descriptor, metadata_tostring_fix

    from tests.saml_metadata import DS, sp_conf

    conf = sp_conf(
        entity_id(name),
        *sp_key_files(key or f"src-{name}"),
        acs=acs,
        slo=slo,
        want_assertions_signed=True,
    )
    if encryption:
        enc_key, enc_cert = sp_key_files(f"src-{name}-enc")
        conf["encryption_keypairs"] = [{"key_file": enc_key, "cert_file": enc_cert}]
    config = SPConfig()
    config.load(conf)
    descriptor = entity_descriptor(config)
    if valid_until is not None:
        descriptor.valid_until = valid_until.strftime("%Y-%m-%dT%H:%M:%SZ")
    xml = metadata_tostring_fix(descriptor, {"md": MD, "ds": DS})
    return xml if isinstance(xml, bytes) else xml.encode("utf-8")


def idp_entity(name: str) -> bytes:
    """An entity with only an IdPSSODescriptor (not an SP)."""
    return (
        f'<md:EntityDescriptor xmlns:md="{MD}" entityID="{entity_id(name)}">'
        "<md:IDPSSODescriptor protocolSupportEnumeration="
        '"urn:oasis:names:tc:SAML:2.0:protocol">'
        "<md:SingleSignOnService Binding="
        '"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" '
        f'Location="https://{name}.example.org/sso"/>'
        "</md:IDPSSODescriptor></md:EntityDescriptor>"
    ).encode()


def aggregate(
    *entities: bytes,
    valid_until: dt.datetime | None = NOW + dt.timedelta(days=7),
    cache_duration: str | None = "PT6H",
) -> bytes:
    """``entities`` in one EntitiesDescriptor, in the order given."""
    root = etree.Element(f"{{{MD}}}EntitiesDescriptor", nsmap={"md": MD})
    root.set("Name", "urn:example:federation")
    if valid_until is not None:
        root.set("validUntil", valid_until.strftime("%Y-%m-%dT%H:%M:%SZ"))
    if cache_duration is not None:
        root.set("cacheDuration", cache_duration)
    for data in entities:
        root.append(etree.fromstring(data))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def with_endpoint(data: bytes, tag: str, location: str) -> bytes:
    """``data`` with its first ``tag`` (AssertionConsumerService...) at ``location``."""
    root = etree.fromstring(data)
    next(root.iter(f"{{{MD}}}{tag}")).set("Location", location)
    return etree.tostring(root)


def make_source(dbsession, name: str = "partner", **values) -> MetadataSource:
    """A file source, unsigned allowed (development), with ``values`` set."""
    fields = {
        "kind": "file",
        "location": f"/nonexistent/{name}.xml",
        "unsigned_ok": True,
        "release": ["uid", "isMemberOf"],
        "entity_filter": [],
        "confirmed_hosts": {},
        **values,
    }
    source = MetadataSource(name=name, **fields)
    dbsession.add(source)
    dbsession.flush()
    return source


def apply(dbsession, source, data: bytes, *, now: dt.datetime = NOW) -> RefreshReport:
    """apply_document at ``now`` with the default 28-day maximum."""
    return apply_document(dbsession, source, data, now=now, max_valid_until=MAX_VALID)
