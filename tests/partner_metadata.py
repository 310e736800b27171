"""A partner's published metadata, signed, as URL and MDQ sources serve it.

``signed_entity`` is one SP's EntityDescriptor (pysaml2's, from
``make_sp_metadata``) with a validUntil and a cacheDuration, signed by the
federation's key (``tests.aggregates.federation_keys``) as an MDQ responder
signs each answer. ``federation_anchor`` is that key's certificate, what a
source's ``--anchor`` names. ``mdq_responder`` answers a
:class:`~tests.partner_server.PartnerServer`'s ``/entities/...`` paths from
a table of entities, in both forms of the MDQ specification.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from urllib.parse import unquote

from lxml import etree

from tests.aggregates import federation_keys, sign_metadata
from tests.partner_server import Answer, Seen
from tests.saml_metadata import make_sp_metadata

MEDIA_TYPE = "application/samlmetadata+xml"


def federation_anchor(name: str = "federation") -> str:
    """The PEM certificate a federation signs with: a source's trust anchor."""
    return Path(federation_keys(name)[1]).read_text()


def signed_entity(
    entity_id: str,
    *,
    valid_for: dt.timedelta = dt.timedelta(days=7),
    cache_duration: str | None = "PT1H",
    signer: str = "federation",
    **metadata: object,
) -> bytes:
    """SP ``entity_id``'s metadata with validUntil and cacheDuration, signed."""
    until = dt.datetime.now(dt.UTC) + valid_for
    root = etree.fromstring(make_sp_metadata(entity_id, **metadata))  # type: ignore[arg-type]
    root.set("validUntil", until.strftime("%Y-%m-%dT%H:%M:%SZ"))
    if cache_duration is not None:
        root.set("cacheDuration", cache_duration)
    key_file, cert_file = federation_keys(signer)
    return sign_metadata(
        etree.tostring(root), key_file, reference="whole", cert_file=cert_file
    )


def mdq_responder(entities: dict[str, bytes], seen: list[str] | None = None):
    """A route answering ``/entities/{id}`` and ``/entities/{sha1}...`` from ``entities``.

    ``seen`` collects what was asked for: the entity ID (decoded from either
    form), or the SHA-1 form as sent for an entity the table does not hold.
    """

    def answer(request: Seen) -> Answer:
        prefix = "/entities/"
        if not request.path.startswith(prefix):
            return Answer(404, b"not an MDQ path")
        asked = request.path[len(prefix) :]
        if asked.lower().startswith("%7bsha1%7d"):
            # The table may have changed since the route was made.
            by_sha1 = {
                hashlib.sha1(known.encode()).hexdigest(): known  # noqa: S324 (MDQ's own form)
                for known in entities
            }
            entity_id = by_sha1.get(asked[len("%7Bsha1%7D") :], "")
        else:
            entity_id = unquote(asked)
        if seen is not None:
            seen.append(entity_id or asked)
        if entity_id not in entities:
            return Answer(404, b"no such entity")
        return Answer(body=entities[entity_id], headers={"Content-Type": MEDIA_TYPE})

    return answer
