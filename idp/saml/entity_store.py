"""pysaml2's metadata store, keyed by entity ID and loaded on first use.

pysaml2's ``MetadataStore`` keeps one metadata source per SP and answers
every lookup (``service``, ``certs``, ``registration_info``...) by asking
each source in turn: with 10,000 SPs an assertion costs tens of thousands
of failed dictionary lookups (40-60 ms), and building the store parses all
10,000 documents (5 s of CPU and 180 MB; docs/performance.md) at start and
at every change of the registry. :class:`SpMetadataStore` has the same
interface and instead:

* finds an SP's source by dictionary access on its entity ID; lookups never
  iterate over the SPs;
* loads an SP's metadata the first time a request needs it, from the
  database, and keeps it keyed by (entity ID, ``metadata_sha256``), at most
  ``capacity`` SPs (the least recently used go first);
* serves a kept source only when the SHA-256 the current request reads in
  the database is the one it was loaded from, so a replaced, disabled or
  removed SP is known for what it is now on every node from the next
  request on, whatever this process loaded before.

Where the store reads the database
    pysaml2 calls the store with an entity ID and nothing else, deep inside
    ``Server``; the store has no database session of its own and must read
    what the request's transaction reads (another connection would not see
    it, and would read a different state than the request checked). So
    :meth:`SpMetadataStore.bind` gives it the request's session for the
    current thread: ``ServerCache.get(dbsession)`` binds it, and every
    lookup pysaml2 makes on that thread until the next ``get`` uses it. The
    binding holds the session weakly, and a lookup with no live session
    finds nothing: an unbound store fails closed.

    A lookup first looks for the SP's row among those the request already
    read (the session's identity map: the SSO and logout code always reads
    the row of the SP it answers, so signing an assertion adds no SQL); only
    otherwise does it SELECT the row by entity ID. Each entity is resolved
    once per binding: pysaml2 asks about the same SP several times per
    assertion.

Consistency
    Sources are immutable once loaded and the store's tables are replaced,
    never changed in place (copy on write, under a lock), so a reader sees
    a whole table and a source it resolved stays whole for its request.
    :meth:`forget_changed`, called when the registry generation rises,
    drops the sources whose SP was replaced, disabled or removed, without
    parsing anything; correctness does not wait for it (the SHA-256 check
    does that), it returns the memory.

An SP whose stored metadata pysaml2 no longer loads (expired since it was
registered, or stored by an older release) is refused, and logged once per
process and document, as the whole-server build logged it.

Enumerations (``keys()``, ``items()``, ``service_providers()``...) are
pysaml2's, over the SPs this process has loaded: the registry in the
database is the list of SPs, and the IdP never asks pysaml2 for it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from saml2.mdstore import MetadataStore, name
from saml2.s_utils import UnknownSystemEntity, UnsupportedBinding
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from idp.models import ServiceProvider
from idp.saml.sp_metadata import MetadataError, load_sp_source

log = logging.getLogger(__name__)

# About 23 kB of parsed pysaml2 objects per SP with two certificates: the
# bound keeps a node that serves 10,000 SPs under 100 MB of them, and a
# reload costs half a millisecond.
DEFAULT_CAPACITY = 4096
# Up to this many loaded SPs, a registry change asks for them by entity ID
# (bound parameters: SQLite takes 32,766, PostgreSQL 65,535).
FEW_LOADED = 500


@dataclass
class _Loaded:
    """One SP's metadata as loaded: ``source`` None when pysaml2 refused it."""

    sha256: str
    source: Any
    used: int = field(default=0, compare=False)


class _Binding:
    """The current request's session (weakly) and what it resolved."""

    def __init__(self, dbsession: Session) -> None:
        self.session = weakref.ref(dbsession)
        self.resolved: dict[str, Any] = {}


class SpMetadataStore(MetadataStore):
    """A ``MetadataStore`` keyed by entity ID; see the module docstring.

    ``lazy`` False makes a plain store of the sources given to :meth:`add`
    (``build_server``'s, for tools and tests), which never reads the
    database.
    """

    def __init__(
        self, attrc, config, *, lazy: bool = True, capacity: int = DEFAULT_CAPACITY
    ) -> None:
        super().__init__(attrc, config)
        self.lazy = lazy
        self.capacity = capacity
        self.loads = 0  # documents parsed, for the tests and benchmarks
        self._entries: dict[str, _Loaded] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._clock = itertools.count(1)

    # -- The request's session ------------------------------------------------

    def bind(self, dbsession: Session) -> None:
        """Read the database through ``dbsession`` on this thread from now on."""
        self._local.binding = _Binding(dbsession)

    # -- Finding one SP's source ---------------------------------------------

    def source(self, entity_id: str) -> Any:
        """The SP's loaded pysaml2 source, or None if it is unknown now."""
        if not isinstance(entity_id, str):
            return None
        if not self.lazy:
            entry = self._entries.get(entity_id)
            return entry.source if entry is not None else None
        binding = getattr(self._local, "binding", None)
        if binding is None:
            return None
        try:
            return binding.resolved[entity_id]
        except KeyError:
            pass
        dbsession = binding.session()
        found = self._resolve(dbsession, entity_id) if dbsession is not None else None
        binding.resolved[entity_id] = found
        return found

    def _resolve(self, dbsession: Session, entity_id: str) -> Any:
        row = _row_in_session(dbsession, entity_id)
        if row is not None:
            enabled, sha256, xml = row
        else:
            stored = dbsession.execute(
                select(ServiceProvider.enabled, ServiceProvider.metadata_sha256).where(
                    ServiceProvider.entity_id == entity_id
                )
            ).first()
            if stored is None:
                return None
            (enabled, sha256), xml = stored, None
        if not enabled:
            return None
        entry = self._entries.get(entity_id)
        if entry is None or entry.sha256 != sha256:
            if xml is None:
                xml = dbsession.scalar(
                    select(ServiceProvider.metadata_xml).where(
                        ServiceProvider.entity_id == entity_id
                    )
                )
                if xml is None:  # removed between the two statements
                    return None
            entry = self._load(entity_id, sha256, xml)
        entry.used = next(self._clock)
        return entry.source

    def _load(self, entity_id: str, sha256: str, xml: str) -> _Loaded:
        try:
            source = load_sp_source(entity_id, xml, self.attrc)
        except MetadataError as exc:
            log_left_out(entity_id, exc)
            source = None
        entry = _Loaded(sha256, source, next(self._clock))
        with self._lock:
            self.loads += 1
            entries = dict(self._entries)
            entries[entity_id] = entry
            if len(entries) > self.capacity:
                _evict(entries, len(entries) - self.capacity + self.capacity // 8)
            self._replace(entries)
        return entry

    def _replace(self, entries: dict[str, _Loaded]) -> None:
        # Two attribute assignments; each is a whole table. ``metadata`` is
        # pysaml2's dict of sources, kept for its enumerations.
        self._entries = entries
        self.metadata = {
            entity_id: entry.source
            for entity_id, entry in entries.items()
            if entry.source is not None
        }

    # -- Registry changes -----------------------------------------------------

    def add(self, entity_id: str, source: Any, sha256: str = "") -> None:
        """Keep a source loaded by :func:`load_sp_source` (eager stores)."""
        with self._lock:
            entries = dict(self._entries)
            entries[entity_id] = _Loaded(sha256, source, next(self._clock))
            self._replace(entries)

    def forget_changed(self, dbsession: Session) -> int:
        """Drop SPs since replaced, disabled or removed; how many were dropped.

        One SELECT of (entity ID, SHA-256), no parsing: what is still
        current stays loaded. It asks for the loaded SPs by entity ID while
        they are few (most nodes use a fraction of the registry), else reads
        every enabled SP's pair.
        """
        entries = self._entries
        if not entries:
            return 0
        query = select(
            ServiceProvider.entity_id, ServiceProvider.metadata_sha256
        ).where(ServiceProvider.enabled.is_(True))
        if len(entries) <= FEW_LOADED:
            query = query.where(ServiceProvider.entity_id.in_(list(entries)))
        current: dict[str, str] = dict(dbsession.execute(query).all())
        with self._lock:
            kept = {
                entity_id: entry
                for entity_id, entry in self._entries.items()
                if current.get(entity_id) == entry.sha256
                # loaded after the SELECT: checked at its next use anyway
                or entity_id not in entries
            }
            dropped = len(self._entries) - len(kept)
            if dropped:
                self._replace(kept)
        return dropped

    # -- pysaml2's lookups, by entity ID --------------------------------------

    def __contains__(self, entity_id: object) -> bool:
        return self.source(entity_id) is not None  # type: ignore[arg-type]

    def __getitem__(self, entity_id: str) -> Any:
        source = self.source(entity_id)
        if source is None:
            raise KeyError(entity_id)
        return source[entity_id]

    def service(self, entity_id, typ, service, binding=None):
        source = self.source(entity_id)
        if source is None:
            log.error("Unknown system entity: %s", entity_id)
            raise UnknownSystemEntity(entity_id)
        found = source.service(entity_id, typ, service, binding)
        if not found:
            log.error("Unsupported binding: %s (%s)", binding, entity_id)
            raise UnsupportedBinding(binding)
        return found

    def ext_service(self, entity_id, typ, service, binding=None):
        source = self.source(entity_id)
        if source is None:
            raise UnknownSystemEntity(entity_id)
        found = source.ext_service(entity_id, typ, service, binding)
        if not found:
            raise UnsupportedBinding(binding)
        return found

    def extension(self, entity_id, typ, service):
        try:
            descriptors = self[entity_id][typ]
        except KeyError:
            return None
        return [
            element
            for descriptor in descriptors
            if "extensions" in descriptor
            for element in descriptor["extensions"]["extension_elements"]
            if element["__class__"] == service
        ]

    def attribute_requirement(self, entity_id, index=None):
        source = self.source(entity_id)
        if source is None:
            return None
        return source.attribute_requirement(entity_id, index)

    def name(self, entity_id, langpref="en"):
        source = self.source(entity_id)
        if source is None:
            return None
        return name(source[entity_id], langpref)

    def bindings(self, entity_id, typ, service):
        source = self.source(entity_id)
        if source is None:
            return None
        return source.bindings(entity_id, typ, service)


def log_left_out(entity_id: str, exc: MetadataError) -> None:
    """The error for a registered, enabled SP whose metadata does not load."""
    # Import refuses what cannot load (SAML-39), so this is metadata that
    # expired since, or was stored by an older release: loud, since every
    # sign-in to this SP now fails.
    log.error(
        "SP %s left out of the SAML server (registered and enabled: "
        "no one can sign in to it): %s",
        entity_id,
        exc,
    )


def _row_in_session(dbsession: Session, entity_id: str) -> tuple[bool, str, str] | None:
    """(enabled, SHA-256, XML) of the SP's row if this session holds it loaded.

    Reads the values the session already has, never loading one: an expired
    row (or one deleted meanwhile) is left to the SELECT.
    """
    for instance in dbsession.identity_map.values():
        if not isinstance(instance, ServiceProvider):
            continue
        state = inspect(instance)
        values = state.dict
        if values.get("entity_id") != entity_id:
            continue
        if instance in dbsession.deleted or state.deleted or state.was_deleted:
            return None
        try:
            return (
                values["enabled"],
                values["metadata_sha256"],
                values["metadata_xml"],
            )
        except KeyError:
            return None
    return None


def _evict(entries: dict[str, _Loaded], count: int) -> None:
    """Remove the ``count`` least recently used entries."""
    oldest = sorted(entries, key=lambda entity_id: entries[entity_id].used)[:count]
    for entity_id in oldest:
        del entries[entity_id]
