"""idMe's key rollover: prepare, activate, retire, each one transaction.

* **prepare** makes the next key (files in ``certs/``, a ``next`` row) and
  publishes it beside the current one; signing goes on with the current key.
* **activate** switches signing to it, once it has been published for
  ``idp.key_rollover_min_publish_days`` (OPS-08: SPs that refresh idMe's
  metadata daily or weekly have had the time to learn it). The old key
  becomes ``previous``: still published, still decrypting.
* **retire** takes the previous key out of the metadata, once the new one
  has signed for ``idp.key_rollover_min_overlap_days``.

Each step raises the registry generation in its own transaction, so every
node rebuilds its SAML server and metadata with the new key set at its next
request (``idp.saml.server.ServerCache``), and writes one audit event. The
database settles two operators racing: at most one ``next`` and one
``current`` row can exist (a unique partial index).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models.keys import SigningKey
from idp.saml import keys as keystore
from idp.saml.keyring import certificate_fingerprint, check_key
from idp.saml.keys import KeyPair, KeyPairError
from idp.saml.registry import bump_generation


class RolloverRefused(Exception):
    """A rollover step refused, with one line saying why and what to do."""


@dataclass(frozen=True)
class Prepared:
    key: SigningKey
    pair: KeyPair
    adopted: SigningKey | None


def days(delta: dt.timedelta) -> str:
    """A duration as an operator reads it: ``6 d 23 h``."""
    hours = int(delta.total_seconds() // 3600)
    return f"{hours // 24} d {hours % 24} h"


def _in(dbsession: Session, state: str) -> SigningKey | None:
    return dbsession.scalar(select(SigningKey).where(SigningKey.state == state))


def _audit(dbsession: Session, event: str, **detail) -> None:
    from idp.services.audit import AuditLog

    AuditLog(dbsession).record(event, detail={"by": "idp-admin", **detail})


def row_for(pair: KeyPair, state: str, now: dt.datetime) -> SigningKey:
    certificate: x509.Certificate = pair.certificate
    fingerprint = certificate_fingerprint(certificate)
    return SigningKey(
        kid=keystore.kid_of(fingerprint),
        fingerprint=fingerprint,
        certificate_pem=pair.cert_pem,
        state=state,
        not_after=certificate.not_valid_after_utc,
        prepared_at=now,
        activated_at=now if state == "current" else None,
    )


def adopt_current(
    dbsession: Session, certs_dir: str | os.PathLike, now: dt.datetime
) -> tuple[SigningKey, bool]:
    """The current key's row, recording ``signing.key`` as it if there is none.

    Returns the row and whether it was recorded now.
    """
    current = _in(dbsession, "current")
    if current is not None:
        return current, False
    if dbsession.scalar(select(SigningKey.kid).limit(1)) is not None:
        raise RolloverRefused(
            "the database has keys but no current one; restore the database "
            "or ask for help before changing keys"
        )
    row = row_for(keystore.load(certs_dir), "current", now)
    dbsession.add(row)
    dbsession.flush()
    _audit(dbsession, "keys.adopt", kid=row.kid, fingerprint=row.fingerprint)
    return row, True


def prepare(
    dbsession: Session,
    certs_dir: str | os.PathLike,
    common_name: str,
    *,
    key_size: int,
    now: dt.datetime,
) -> Prepared:
    """Make the next key and publish it beside the current one.

    The key files are written before the row and removed again if the row
    cannot be written; the caller removes them if the transaction then
    does not commit (:func:`discard_files`).
    """
    current, adopted = adopt_current(dbsession, certs_dir, now)
    waiting = _in(dbsession, "next")
    if waiting is not None:
        raise RolloverRefused(
            f"key {waiting.kid} is already prepared (published since "
            f"{waiting.prepared_at:%Y-%m-%d %H:%M} UTC); activate it first"
        )
    previous = _in(dbsession, "previous")
    if previous is not None:
        raise RolloverRefused(
            f"the previous key {previous.kid} is still published; retire it first "
            "('keys rollover retire'), so that no more than two keys are in use"
        )
    key_pem, cert_pem = keystore.make_pem_pair(common_name, key_size=key_size)
    fingerprint = certificate_fingerprint(x509.load_pem_x509_certificate(cert_pem))
    pair = keystore.kid_pair(certs_dir, keystore.kid_of(fingerprint))
    keystore.write_pair(pair, key_pem, cert_pem)
    try:
        row = row_for(pair, "next", now)
        dbsession.add(row)
        dbsession.flush()
        bump_generation(dbsession)
        _audit(
            dbsession,
            "keys.prepare",
            kid=row.kid,
            fingerprint=row.fingerprint,
            current=current.kid,
        )
    except BaseException:
        # Another prepare won the race (the unique index), or the database
        # failed: no row will name these files.
        discard_files(pair)
        raise
    return Prepared(row, pair, current if adopted else None)


def discard_files(pair: KeyPair) -> None:
    """Remove a prepared pair's files (its transaction did not commit)."""
    for path in (pair.key_file, pair.cert_file):
        path.unlink(missing_ok=True)


def activate_after(row: SigningKey, min_publish_days: int) -> dt.datetime:
    return row.prepared_at + dt.timedelta(days=min_publish_days)


def activate(
    dbsession: Session,
    certs_dir: str | os.PathLike,
    *,
    now: dt.datetime,
    min_publish_days: int,
    force: bool = False,
) -> tuple[SigningKey, SigningKey, bool]:
    """Switch signing to the next key; return (new current, previous, forced).

    Refused before the next key has been published ``min_publish_days``
    unless ``force`` (audited as forced), and refused on a node that lacks
    the next key's files, whatever ``force`` says.
    """
    upcoming = _in(dbsession, "next")
    if upcoming is None:
        raise RolloverRefused("there is no next key; run 'keys rollover prepare' first")
    current = _in(dbsession, "current")
    if current is None:
        raise RolloverRefused("the database has no current key to replace")
    published = now - upcoming.prepared_at
    allowed = activate_after(upcoming, min_publish_days)
    if now < allowed and not force:
        raise RolloverRefused(
            f"key {upcoming.kid} has been published for {days(published)}, less "
            f"than idp.key_rollover_min_publish_days ({min_publish_days} d): SPs "
            f"may not have fetched it yet; activate from {allowed:%Y-%m-%d %H:%M} "
            "UTC, or with --force to switch now"
        )
    try:
        check_key(certs_dir, upcoming)
    except KeyPairError as exc:
        raise RolloverRefused(f"cannot activate key {upcoming.kid}: {exc}") from None
    current.state = "previous"
    dbsession.flush()  # one current at a time, even within the transaction
    upcoming.state = "current"
    upcoming.activated_at = now
    dbsession.flush()
    bump_generation(dbsession)
    _audit(
        dbsession,
        "keys.activate",
        kid=upcoming.kid,
        fingerprint=upcoming.fingerprint,
        previous=current.kid,
        published_seconds=int(published.total_seconds()),
        forced=now < allowed,
    )
    return upcoming, current, now < allowed


def retire(
    dbsession: Session,
    *,
    now: dt.datetime,
    min_overlap_days: int,
    force: bool = False,
) -> SigningKey:
    """Take the previous key out of the metadata; return it."""
    previous = _in(dbsession, "previous")
    if previous is None:
        raise RolloverRefused("there is no previous key to retire")
    current = _in(dbsession, "current")
    since = current.activated_at if current is not None else None
    allowed = (since or now) + dt.timedelta(days=min_overlap_days)
    if now < allowed and not force:
        raise RolloverRefused(
            f"key {current.kid if current else '?'} has signed for "
            f"{days(now - (since or now))}, less than "
            f"idp.key_rollover_min_overlap_days ({min_overlap_days} d); retire "
            f"{previous.kid} from {allowed:%Y-%m-%d %H:%M} UTC, or with --force"
        )
    previous.state = "retired"
    previous.retired_at = now
    dbsession.flush()
    bump_generation(dbsession)
    _audit(
        dbsession,
        "keys.retire",
        kid=previous.kid,
        fingerprint=previous.fingerprint,
        forced=now < allowed,
    )
    return previous
