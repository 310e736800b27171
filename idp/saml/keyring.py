"""idMe's key set: which key signs, which are published, and their files.

The database (``idp.models.keys.SigningKey``) says which certificate is in
which state; each node holds the private keys as files in ``certs/``
(``<kid>.key``/``<kid>.crt``). Every published key (current, next,
previous) is needed on every node: the current one signs, and an SP may
encrypt to any key idMe publishes. A node that lacks one, or holds a file
that is not the certificate the database names, refuses to sign at all
(:class:`idp.saml.keys.KeyPairError`, a 503 page, and ``/healthz`` says which
file), rather than sign with a key the partners were not told about.

An install upgraded from a single ``signing.key`` has no row: that pair is
the current key (:attr:`KeySet.recorded` is False) until the first
``keys rollover prepare`` records it, and keeps its file names after.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models.keys import PUBLISHED_STATES, SigningKey
from idp.saml import keys as keystore
from idp.saml.keys import KeyPair, KeyPairError

log = logging.getLogger(__name__)

# The order keys are listed in idMe's metadata: the signing key first.
_ORDER = {state: position for position, state in enumerate(PUBLISHED_STATES)}


@dataclass(frozen=True)
class LiveKey:
    """A published key: its state, its checked files and its dates."""

    kid: str
    state: str
    pair: KeyPair
    fingerprint: str
    not_after: dt.datetime
    prepared_at: dt.datetime | None = None
    activated_at: dt.datetime | None = None


@dataclass(frozen=True)
class KeySet:
    """The published keys, current first; exactly one is current."""

    keys: tuple[LiveKey, ...]
    recorded: bool = True

    def _in(self, state: str) -> LiveKey | None:
        return next((key for key in self.keys if key.state == state), None)

    @property
    def current(self) -> LiveKey:
        key = self._in("current")
        if key is None:  # load_keyset never builds such a set
            raise KeyPairError("no current signing key", "no current signing key")
        return key

    @property
    def next(self) -> LiveKey | None:
        return self._in("next")

    @property
    def previous(self) -> LiveKey | None:
        return self._in("previous")


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def files_for(certs_dir: str | os.PathLike, kid: str, fingerprint: str) -> KeyPair:
    """Where the key ``kid`` lives: ``<kid>.key``, or the adopted ``signing.key``.

    The pair an install started with keeps its names: it is that key only if
    its certificate has the fingerprint the database recorded.
    """
    pair = keystore.kid_pair(certs_dir, kid)
    if pair.key_file.exists() or pair.cert_file.exists():
        return pair
    legacy = keystore.signing_pair(certs_dir)
    try:
        if certificate_fingerprint(legacy.certificate) == fingerprint:
            return legacy
    except (OSError, ValueError):
        pass
    return pair


# What a file check depends on: a file replaced, rewritten or chmod-ed has
# another signature, and is checked again.
_FileState = tuple[int, int, int, int, int]
_Checked = dict[tuple[str, str], tuple[_FileState, _FileState]]


def _state(path: Path) -> _FileState:
    info = path.stat()
    return (info.st_ino, info.st_dev, info.st_size, info.st_mtime_ns, info.st_mode)


def _states(pair: KeyPair) -> tuple[_FileState, _FileState] | None:
    try:
        return _state(pair.key_file), _state(pair.cert_file)
    except OSError:
        return None


def check_key(
    certs_dir: str | os.PathLike, row: SigningKey, checked: _Checked | None = None
) -> KeyPair:
    """The files of ``row``'s key, checked: present, 0600, matching, the same cert.

    Loading an RSA private key validates it, about 120 ms for RSA-3072 on
    this machine class; with ``checked``, files whose inode, size, time and mode have
    not changed since they passed are not loaded again (``/healthz`` runs
    this at every probe).
    """
    pair = files_for(certs_dir, row.kid, row.fingerprint)
    states = _states(pair)
    known = checked.get((row.fingerprint, str(pair.key_file))) if checked else None
    if states is not None and known == states:
        return pair
    missing = pair.key_file if not pair.key_file.is_file() else pair.cert_file
    keystore.check(
        pair,
        missing_hint=(
            f"the database lists key {row.kid} as {row.state}, so every node needs "
            f"it: copy {row.kid}.key (mode 0600) and {row.kid}.crt from the node "
            "where 'keys rollover prepare' made them"
        ),
        missing_reason=f"{missing.name} ({row.state} key) is missing on this node",
    )
    if certificate_fingerprint(pair.certificate) != row.fingerprint:
        raise KeyPairError(
            f"{pair.cert_file} is not the certificate the database lists for key "
            f"{row.kid} ({row.state}, SHA-256 {row.fingerprint})",
            reason=f"{pair.cert_file.name} is not the {row.state} key the "
            "database lists",
        )
    if checked is not None and states is not None:
        checked[(row.fingerprint, str(pair.key_file))] = states
    return pair


def published_rows(dbsession: Session) -> list[SigningKey]:
    """The keys in idMe's metadata, current first (one SELECT)."""
    rows = dbsession.scalars(
        select(SigningKey).where(SigningKey.state.in_(PUBLISHED_STATES))
    ).all()
    return sorted(rows, key=lambda row: _ORDER[row.state])


def load_keyset(
    dbsession: Session, certs_dir: str | os.PathLike, checked: _Checked | None = None
) -> KeySet:
    """The published keys with their files checked; KeyPairError if any is unusable.

    ``checked`` remembers files that passed (:func:`check_key`).
    """
    rows = published_rows(dbsession)
    if not rows:
        legacy = keystore.signing_pair(certs_dir)
        states = _states(legacy)
        key = ("signing.key", str(legacy.key_file))
        if checked is None or states is None or checked.get(key) != states:
            keystore.load(certs_dir)
            if checked is not None and states is not None:
                checked[key] = states
        return keyset_of(legacy)
    if not any(row.state == "current" for row in rows):
        raise KeyPairError(
            "the database lists published keys but none is current; "
            "run 'idp-admin CONFIG keys rollover status'",
            reason="no current signing key",
        )
    return KeySet(
        tuple(
            LiveKey(
                kid=row.kid,
                state=row.state,
                pair=check_key(certs_dir, row, checked),
                fingerprint=row.fingerprint,
                not_after=row.not_after,
                prepared_at=row.prepared_at,
                activated_at=row.activated_at,
            )
            for row in rows
        )
    )


class KeyRing:
    """This node's view of idMe's keys: ``certs/`` read against the database."""

    def __init__(self, certs_dir: str | os.PathLike):
        self.certs_dir = Path(certs_dir)
        self._checked: _Checked = {}
        self._seen: tuple[tuple[str, str], ...] | None = None

    def load(self, dbsession: Session) -> KeySet:
        keyset = load_keyset(dbsession, self.certs_dir, self._checked)
        seen = tuple((key.state, key.kid) for key in keyset.keys)
        if seen != self._seen:
            # Once per change on each node: the log shows when every node
            # took up a rollover step.
            self._seen = seen
            log.info(
                "idMe's keys on this node: %s",
                ", ".join(f"{state} {kid}" for state, kid in seen),
            )
        return keyset


def keyset_of(keys: KeySet | KeyPair) -> KeySet:
    """``keys`` as a key set: a bare pair is a set of one current key."""
    if isinstance(keys, KeySet):
        return keys
    certificate = keys.certificate
    fingerprint = certificate_fingerprint(certificate)
    return KeySet(
        (
            LiveKey(
                kid=keystore.kid_of(fingerprint),
                state="current",
                pair=keys,
                fingerprint=fingerprint,
                not_after=certificate.not_valid_after_utc,
            ),
        ),
        recorded=False,
    )


def keyring_of(keys: KeyRing | KeyPair) -> KeyRing:
    """``keys`` as a key ring: a bare pair stands for the ``certs/`` it is in."""
    return keys if isinstance(keys, KeyRing) else KeyRing(keys.key_file.parent)
