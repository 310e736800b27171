"""idMe's metadata as partners fetch it: per-partner URLs, MDQ names, fetch records.

``keys rollover status`` must say, per SP, whether it can have seen the next
key. Metadata is public, so a fetch says nothing about who fetched it unless
the URL does: each SP gets its own metadata URL (``/saml/metadata?sp=TOKEN``
and the MDQ base ``/saml/mdq/sp/TOKEN``), given in its per-partner export.
The token is the SP's row id and an HMAC over it and its entity ID under a
key derived from ``idp.hmac_key``: an outsider who knows an SP's entity ID
cannot make fetches count as that SP's (which would tell the operator a
partner is ready when it is not), and a token stops working when the SP is
removed. Checking one costs one primary-key read, at any number of SPs.

Each fetch updates one row per (SP, client network): polling adds no rows,
and an address-hopping client on one network adds none either. A row is
written at most once a minute (``count`` counts those writes), so a client
hammering the URL causes reads, not writes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
from typing import cast
from urllib.parse import quote

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from idp.models import MetadataFetch, ServiceProvider

log = logging.getLogger(__name__)

_TOKEN_CONTEXT = b"idme partner metadata url v1\x00"
_TAG_HEX = 24  # 96 bits
USER_AGENT_MAX = 256
MDQ_SHA1_PREFIX = "{sha1}"
# A (SP, network) pair's row is written at most once a minute.
RECORD_EVERY = dt.timedelta(seconds=60)


def _key(hmac_key: str) -> bytes:
    return hmac.new(hmac_key.encode("utf-8"), _TOKEN_CONTEXT, hashlib.sha256).digest()


def _tag(hmac_key: str, sp_id: int, entity_id: str) -> str:
    message = f"{sp_id}\x00{entity_id}".encode()
    return hmac.new(_key(hmac_key), message, hashlib.sha256).hexdigest()[:_TAG_HEX]


def partner_token(hmac_key: str, sp: ServiceProvider) -> str:
    """The token of ``sp``'s own metadata URL: ``<id>-<tag>``."""
    return f"{sp.id}-{_tag(hmac_key, sp.id, sp.entity_id)}"


def find_partner(dbsession: Session, hmac_key: str, token: str) -> str | None:
    """The entity ID of the enabled SP whose token this is, or None."""
    number, _, tag = token.partition("-")
    if not number.isdigit() or len(number) > 18 or len(tag) != _TAG_HEX:
        return None
    row = dbsession.execute(
        select(ServiceProvider.entity_id, ServiceProvider.enabled).where(
            ServiceProvider.id == int(number)
        )
    ).first()
    if row is None or not row.enabled:
        return None
    expected = _tag(hmac_key, int(number), row.entity_id)
    return row.entity_id if hmac.compare_digest(expected, tag) else None


def partner_urls(base_url: str, token: str) -> dict[str, str]:
    """The per-partner metadata URL and MDQ base URL of ``token``."""
    return {
        "metadata": f"{base_url}/saml/metadata?sp={token}",
        "mdq": f"{base_url}/saml/mdq/sp/{token}",
    }


def mdq_names(entity_id: str) -> tuple[str, str]:
    """The two names an MDQ client may ask for an entity by (draft-young-md-query-saml).

    The entity ID URL-encoded (every reserved character, ``/`` included) and
    ``{sha1}`` followed by the lowercase hex SHA-1 of the entity ID.
    """
    return (
        quote(entity_id, safe=""),
        MDQ_SHA1_PREFIX + hashlib.sha1(entity_id.encode()).hexdigest(),  # noqa: S324
    )


def mdq_asks_for(requested: str, entity_id: str) -> bool:
    """Whether the MDQ identifier ``requested`` (URL-decoded) names ``entity_id``.

    WSGI hands the path over decoded, so an URL-encoded entity ID arrives
    as the entity ID itself; ``{sha1}`` is compared case-insensitively in its
    hex digits, as clients differ.
    """
    if requested.lower().startswith(MDQ_SHA1_PREFIX):
        digest = requested[len(MDQ_SHA1_PREFIX) :].lower()
        return hmac.compare_digest(digest, mdq_names(entity_id)[1][6:])
    return requested == entity_id


def client_network(address: str) -> str:
    """The network a fetch is counted in: IPv4 /24, IPv6 /64, else the text."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address.strip()[:64]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Network((int(ip) >> 8 << 8, 24)))
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


def _clean(text: str, limit: int) -> str:
    printable = "".join(ch if ch.isprintable() else "?" for ch in text)
    return printable[:limit]


def record_fetch(
    dbsession: Session,
    *,
    endpoint: str,
    client_address: str,
    user_agent: str,
    sp_entity_id: str | None,
    now: dt.datetime | None = None,
) -> None:
    """Note one fetch of idMe's metadata (at most once a minute per row).

    Never fails the fetch itself.

    Runs in a SAVEPOINT: a database error is logged and rolled back, and the
    metadata is served all the same.
    """
    now = now or dt.datetime.now(dt.UTC)
    sp_key = sp_entity_id or ""
    network = client_network(client_address or "")
    digest = hashlib.sha256(f"{sp_key}\x00{network}".encode()).hexdigest()
    values = {
        "last_at": now,
        "client_address": _clean(client_address or "", 64),
        "user_agent": _clean(user_agent or "", USER_AGENT_MAX),
        "endpoint": endpoint,
    }
    try:
        with dbsession.begin_nested():
            last = dbsession.scalar(
                select(MetadataFetch.last_at).where(MetadataFetch.digest == digest)
            )
            if last is not None and now - last < RECORD_EVERY:
                # Seen within the minute: a read, no write. Hammering the
                # URL costs the database no more than any other page.
                return
            result = dbsession.execute(
                update(MetadataFetch)
                .where(MetadataFetch.digest == digest)
                .values(count=MetadataFetch.count + 1, **values)
            )
            updated = cast(CursorResult, result).rowcount
            if updated:
                return
        try:
            with dbsession.begin_nested():
                dbsession.add(
                    MetadataFetch(
                        digest=digest,
                        sp_entity_id=sp_key,
                        first_at=now,
                        count=1,
                        **values,
                    )
                )
        except IntegrityError:
            # Another fetch from the same place created the row first.
            with dbsession.begin_nested():
                dbsession.execute(
                    update(MetadataFetch)
                    .where(MetadataFetch.digest == digest)
                    .values(count=MetadataFetch.count + 1, **values)
                )
    except SQLAlchemyError:
        log.warning("could not record a fetch of idMe's metadata", exc_info=True)
