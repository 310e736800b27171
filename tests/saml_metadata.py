"""SP metadata as a pysaml2 SP publishes it, and the SP's throwaway keys.

``make_sp_metadata`` turns an ``SPConfig`` into an ``EntityDescriptor`` with
pysaml2 itself, so the metadata the tests register is what a real SP sends;
its options add what the SAML tests vary (signed requests, an encryption key
and its algorithms, NameID formats, validUntil, endpoints). ``padded``,
``metadata_with``, ``deeply_nested`` and ``with_encryption_methods`` alter
it for the size, endpoint, depth and encryption checks.
"""

from __future__ import annotations

import datetime as dt
import functools
import tempfile
from pathlib import Path

from lxml import etree
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import SPConfig
from saml2.metadata import entity_descriptor, metadata_tostring_fix
from saml2.saml import NAMEID_FORMAT_PERSISTENT

from idp.saml.keys import make_pem_pair, write_private_key

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
SP_ENTITY_ID = "https://sp.example.org/sp"
# Encryption algorithms an SP's metadata may list (XML Encryption 1.0, 1.1).
XENC = "http://www.w3.org/2001/04/xmlenc#"
XENC11 = "http://www.w3.org/2009/xmlenc11#"
AES256_GCM = XENC11 + "aes256-gcm"
AES128_GCM = XENC11 + "aes128-gcm"
AES256_CBC = XENC + "aes256-cbc"
AES128_CBC = XENC + "aes128-cbc"
TRIPLEDES = XENC + "tripledes-cbc"
RSA_OAEP_MGF1P = XENC + "rsa-oaep-mgf1p"
RSA_OAEP_11 = XENC11 + "rsa-oaep"
SHA1 = DS + "sha1"
SHA256 = XENC + "sha256"
SHA512 = XENC + "sha512"
# What the SAML tests' registered SPs release (their policy after import).
RELEASED = ["uid", "displayName", "mail", "isMemberOf"]

_keys_dir = tempfile.TemporaryDirectory(prefix="idp-test-sp-keys-")


def write_key_pair(
    directory: str | Path, name: str, *, key_size: int = 2048
) -> tuple[str, str]:
    """A fresh RSA key (0600) and self-signed certificate, PEM files named
    ``<name>.key`` / ``<name>.crt`` in ``directory``: (key_file, cert_file)."""
    key_pem, cert_pem = make_pem_pair(f"{name}.example.org", key_size=key_size)
    key_file = Path(directory) / f"{name}.key"
    cert_file = Path(directory) / f"{name}.crt"
    write_private_key(key_file, key_pem)
    cert_file.write_bytes(cert_pem)
    return str(key_file), str(cert_file)


@functools.cache
def sp_key_files(name: str = "sp") -> tuple[str, str]:
    """A throwaway SP key pair on disk (pysaml2 reads certificates from files),
    made once per name for the whole run."""
    return write_key_pair(_keys_dir.name, name)


def sp_conf(
    entity_id: str,
    key_file: str | Path,
    cert_file: str | Path,
    *,
    acs: str | None = None,
    slo: str | None = None,
    slo_binding: str | None = BINDING_HTTP_REDIRECT,
    **sp: object,
) -> dict:
    """pysaml2's configuration of a test SP, signing in-process.

    ``acs`` and ``slo`` default to ``/acs`` and ``/slo`` beside the entity ID
    (no SLO endpoint when ``slo_binding`` is None); ``sp`` adds to the
    ``service.sp`` section (flags, algorithms, name ID formats, mdui).
    """
    base = entity_id.rsplit("/", 1)[0]
    endpoints: dict[str, list] = {
        "assertion_consumer_service": [(acs or f"{base}/acs", BINDING_HTTP_POST)]
    }
    if slo_binding is not None:
        endpoints["single_logout_service"] = [(slo or f"{base}/slo", slo_binding)]
    return {
        "entityid": entity_id,
        "key_file": str(key_file),
        "cert_file": str(cert_file),
        "service": {"sp": {"endpoints": endpoints, **sp}},
        # In-process xmlsec: pysaml2 looks for no xmlsec1 binary.
        "crypto_backend": "XMLSecurity",
    }


def make_sp_metadata(
    entity_id: str = SP_ENTITY_ID,
    *,
    acs: str | None = None,
    slo: str | None = None,
    signed_requests: bool = False,
    encryption: bool = False,
    encryption_methods: tuple[str, ...] = (),
    name_id_formats: tuple[str, ...] = (NAMEID_FORMAT_PERSISTENT,),
    valid_until: dt.datetime | None = None,
    want_assertions_signed: bool = True,
) -> bytes:
    """An SP's EntityDescriptor as pysaml2 publishes it.

    ``encryption`` adds an encryption key (and ``encryption_methods`` lists
    its algorithms); ``signed_requests`` sets ``AuthnRequestsSigned``,
    ``want_assertions_signed`` ``WantAssertionsSigned``.
    """
    base = entity_id.rsplit("/", 1)[0]
    conf = sp_conf(
        entity_id,
        *sp_key_files(),
        acs=acs,
        slo=slo,
        authn_requests_signed=signed_requests,
        want_assertions_signed=want_assertions_signed,
        name_id_format=list(name_id_formats),
        ui_info={
            "display_name": [
                {"text": "Sistem Contoh", "lang": "ms"},
                {"text": "Example System", "lang": "en"},
            ],
            "logo": {"text": f"{base}/logo.png", "height": "40", "width": "40"},
        },
    )
    if encryption:
        enc_key, enc_cert = sp_key_files("sp-encryption")
        conf["encryption_keypairs"] = [{"key_file": enc_key, "cert_file": enc_cert}]
    config = SPConfig()
    config.load(conf)
    descriptor = entity_descriptor(config)
    if valid_until is not None:
        descriptor.valid_until = valid_until.strftime("%Y-%m-%dT%H:%M:%SZ")
    xml = metadata_tostring_fix(descriptor, {"md": MD, "ds": DS})
    if isinstance(xml, str):
        xml = xml.encode("utf-8")
    if encryption_methods:
        root = etree.fromstring(xml)
        for key in root.iter(f"{{{MD}}}KeyDescriptor"):
            if key.get("use") == "encryption":
                for algorithm in encryption_methods:
                    etree.SubElement(
                        key, f"{{{MD}}}EncryptionMethod", Algorithm=algorithm
                    )
        xml = etree.tostring(root)
    return xml


def padded(data: bytes, size: int) -> bytes:
    """``data`` followed by a comment that brings it to exactly ``size`` bytes."""
    filler = size - len(data) - len(b"\n<!---->")
    return data + b"\n<!--" + b"x" * filler + b"-->"


def metadata_with(acs: str | None, slo: str | None) -> bytes:
    """make_sp_metadata() with one endpoint set verbatim (lxml escapes it)."""
    root = etree.fromstring(make_sp_metadata())
    descriptor = root.find(f"{{{MD}}}SPSSODescriptor")
    for tag, value in (("AssertionConsumerService", acs), ("SingleLogoutService", slo)):
        if value is not None:
            descriptor.find(f"{{{MD}}}{tag}").set("Location", value)
    return etree.tostring(root)


def deeply_nested(depth: int) -> bytes:
    """make_sp_metadata() with ``depth`` nested elements in md:Extensions."""
    text = make_sp_metadata().decode()
    opening = text.index(">", text.index("<md:EntityDescriptor")) + 1
    nest = "<x:n xmlns:x='urn:example:nest'>" + "<x:n>" * (depth - 1)
    nest += "</x:n>" * depth
    extensions = f"<md:Extensions>{nest}</md:Extensions>"
    return (text[:opening] + extensions + text[opening:]).encode()


def with_encryption_methods(data: bytes, methods) -> bytes:
    """``data`` with ``methods`` (alg, digest) listed under its encryption key."""
    root = etree.fromstring(data)
    [key] = [
        k for k in root.iter(f"{{{MD}}}KeyDescriptor") if k.get("use") == "encryption"
    ]
    for algorithm, digest in methods:
        method = etree.SubElement(key, f"{{{MD}}}EncryptionMethod", Algorithm=algorithm)
        if digest:
            etree.SubElement(method, f"{{{DS}}}DigestMethod", Algorithm=digest)
    return etree.tostring(root)
