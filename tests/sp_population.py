"""Many registered SPs at once, stored as ``import_sp`` stores them.

Registering 10,000 SPs one ``import_sp`` at a time parses each document
twice and takes minutes; the scale tests and ``bench/bench_server_scale.py``
need the rows, not the import. :func:`sp_documents` makes one metadata
document per SP (its own entity ID, endpoints and logo, as pysaml2 publishes
them; certificates from a small pool of keys), and :func:`sp_rows` the
``service_providers`` rows ``import_sp`` would write for them, for one bulk
INSERT (:func:`register_many`). ``tests/functional/test_saml_server.py``
checks that a row made here equals the one ``import_sp`` writes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import insert
from sqlalchemy.orm import Session

from idp.models import ServiceProvider
from idp.saml.registry import DEFAULT_RELEASE, bump_generation, default_name_id_format
from idp.saml.sp_metadata import parse_sp_metadata
from tests.saml_metadata import SP_ENTITY_ID, make_sp_metadata, sp_key_files

TEMPLATE_HOST = "sp.example.org"


def entity_id(n: int) -> str:
    """The entity ID of the ``n``-th SP of a population."""
    return f"https://sp{n}.example.org/sp"


def _der_base64(cert_file: str) -> str:
    pem = Path(cert_file).read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    return base64.b64encode(der).decode("ascii")


@functools.cache
def _templates(keys: int) -> tuple[str, ...]:
    """``keys`` copies of one SP's metadata, each with its own certificate."""
    template = make_sp_metadata().decode("utf-8")
    original = _der_base64(sp_key_files()[1])
    assert original in template, "make_sp_metadata embeds the key as DER base64"
    return tuple(
        template
        if n == 0
        else template.replace(original, _der_base64(sp_key_files(f"pool{n}")[1]))
        for n in range(keys)
    )


def sp_documents(count: int, *, keys: int = 4, start: int = 0) -> Iterator[str]:
    """Metadata of SPs ``start`` .. ``start + count - 1``, keys from a pool."""
    templates = _templates(keys)
    for n in range(start, start + count):
        yield templates[n % keys].replace(TEMPLATE_HOST, f"sp{n}.example.org")


@functools.cache
def _policy() -> dict:
    # What import_sp decides from the metadata; every document of a
    # population has the same shape, so one parse decides for all.
    parsed = parse_sp_metadata(make_sp_metadata())
    assert parsed.entity_id == SP_ENTITY_ID
    return {
        "enabled": True,
        "name_id_format": default_name_id_format(parsed.name_id_formats),
        "sign_response": True,
        "sign_assertion": True,
        "global_uid": False,
        "attributes_released": list(DEFAULT_RELEASE),
        "metadata_valid_until": parsed.valid_until,
        "encrypt_assertion": bool(parsed.encryption_certificates),
    }


def sp_rows(
    count: int, *, keys: int = 4, start: int = 0, module_id: int | None = None
) -> Iterator[dict]:
    """The ``service_providers`` rows ``import_sp`` writes for the documents."""
    policy = _policy()
    for n, xml in enumerate(sp_documents(count, keys=keys, start=start), start):
        yield {
            **policy,
            "entity_id": entity_id(n),
            "module_id": module_id,
            "metadata_xml": xml,
            "metadata_sha256": hashlib.sha256(xml.encode("utf-8")).hexdigest(),
        }


def register_many(
    dbsession: Session,
    count: int,
    *,
    keys: int = 4,
    start: int = 0,
    module_id: int | None = None,
    batch: int = 1000,
) -> None:
    """Register ``count`` SPs in bulk, and raise the registry generation once."""
    rows = sp_rows(count, keys=keys, start=start, module_id=module_id)
    while chunk := [row for _, row in zip(range(batch), rows, strict=False)]:
        dbsession.execute(insert(ServiceProvider), chunk)
    bump_generation(dbsession)
    dbsession.flush()
