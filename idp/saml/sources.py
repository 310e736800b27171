"""Metadata sources: a partner's document applied to the SP registry in bulk.

A source (``idp.models.MetadataSource``) names where a document comes from
(:data:`READERS`: a file, an upload, and the network kinds), whose signature
it must carry and the policy of the SPs it brings. :func:`apply_document`
takes one copy of that document into the registry:

1. the document as a whole: its root signature under the source's trust
   anchor before anything in it is read (SAML-28), then its root
   ``validUntil`` (present when signed, not past, not further out than the
   configured maximum) and ``cacheDuration``. Any failure is a
   :class:`SourceError` and nothing changes;
2. a document whose SHA-256 is the one last applied is not read further;
3. each ``md:EntityDescriptor`` becomes a standalone document (its in-scope
   namespaces carried, the validUntil it inherits written on it) checked by
   the same rules as ``sp import``. One that fails is **quarantined** with a
   one-line reason and never blocks the others; an SP it had registered
   before keeps its last good metadata, which expires with the validUntil
   written on it;
4. new entities are registered with the source's policy; changed ones are
   compared with :func:`idp.saml.registry.trust_changes` and either applied
   (``auto_apply``) or held as a :class:`~idp.models.PendingChange`; those
   gone from the document are removed. Everything is audited, in the
   caller's one transaction, with one registry generation.

An SP one source brought is never changed by another source or by
``sp import`` (an entityID clash, quarantined naming both), and an entity
whose endpoints are on a host another entity uses is quarantined (SAML-29)
unless an operator confirmed that host for it (``source approve
--confirm-host``, kept in ``MetadataSource.confirmed_hosts``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from idp.models import (
    MetadataSource,
    PendingChange,
    QuarantinedEntity,
    ServiceProvider,
)
from idp.saml import registry, xsdatetime
from idp.saml.sp_metadata import (
    MAX_ENTITY_ID_LENGTH,
    MetadataError,
    SpMetadata,
    _one_line,
    load_sp_source,
    parse_sp_metadata,
)
from idp.saml.xml import DS_NS, MD_NS, XmlRefused, parse_document
from idp.services.audit import AuditLog
from idp.units import format_over

# eduGAIN's aggregate of some 10,000 entities is about 80 MB.
MAX_DOCUMENT_BYTES = 200 * 1024 * 1024
# How often apply_document reports progress, in entities.
PROGRESS_EVERY = 100

_ENTITIES = f"{{{MD_NS}}}EntitiesDescriptor"
_ENTITY = f"{{{MD_NS}}}EntityDescriptor"
_SP_DESCRIPTOR = f"{{{MD_NS}}}SPSSODescriptor"
_SIGNATURE = f"{{{DS_NS}}}Signature"


class SourceError(ValueError):
    """The document as a whole is unusable: one precise line; nothing changed."""


@dataclass
class RefreshReport:
    """What one application of a source's document did (entity IDs)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    quarantined: dict[str, str] = field(default_factory=dict)
    document_changed: bool = False
    valid_until: dt.datetime | None = None
    cache_duration: int | None = None
    # Entities that are not SPs (an IdP's, an attribute authority's), and
    # entities the source's entity filter leaves out: counted, not kept.
    skipped: int = 0
    filtered: int = 0

    def summary(self) -> str:
        """One line: the counts."""
        if not self.document_changed:
            return "document unchanged since the last refresh"
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed, "
            f"{len(self.held)} held for approval, "
            f"{len(self.quarantined)} quarantined, {self.skipped} not SPs, "
            f"{self.filtered} filtered out"
        )


# --------------------------------------------------------------------------
# Reading a source's document


def read_file(path: str | Path, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> bytes:
    """A document from this machine, never more than ``max_bytes`` read."""
    try:
        with open(path, "rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise SourceError(f"{path} is {format_over(len(data), max_bytes)}")
    return data


def _read_local(source: MetadataSource) -> bytes:
    return read_file(source.location)


#: kind -> how ``refresh`` gets the source's current document.
READERS: dict[str, Callable[[MetadataSource], bytes]] = {
    "file": _read_local,
    "upload": _read_local,
}


def refresh(
    dbsession: Session,
    source: MetadataSource,
    *,
    now: dt.datetime,
    max_valid_until: dt.timedelta,
    progress: Callable[[int, int], None] | None = None,
    by: str = "idp-admin",
) -> RefreshReport:
    """Read the source's document and apply it (:func:`apply_document`).

    Raises :class:`SourceError` when it cannot be read or used; the caller
    records that on the source in a transaction of its own, since this one
    must abort.
    """
    reader = READERS.get(source.kind)
    if reader is None:
        raise SourceError(f"source {source.name}: no reader for kind {source.kind!r}")
    data = reader(source)
    report = apply_document(
        dbsession,
        source,
        data,
        now=now,
        max_valid_until=max_valid_until,
        progress=progress,
        by=by,
    )
    source.fetched_at = now
    return report


# --------------------------------------------------------------------------
# The document as a whole


def trust_anchor(source: MetadataSource):
    """The source's :class:`~idp.saml.metadata_signature.TrustAnchor`, or None.

    Raises :class:`SourceError` for a stored anchor that no longer reads.
    """
    text = "\n".join(
        part for part in (source.anchor_pem, source.anchor_fingerprint) if part
    )
    if not text:
        return None
    from idp.saml.metadata_signature import MetadataSignatureError, parse_anchor

    try:
        return parse_anchor(text)
    except MetadataSignatureError as exc:
        raise SourceError(f"source {source.name}: {exc}") from None


def _document_root(source: MetadataSource, data: bytes) -> etree._Element:
    """The root to read: verified under the anchor first, or unsigned if allowed."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise SourceError(
            f"the document is {format_over(len(data), MAX_DOCUMENT_BYTES)}"
        )
    anchor = trust_anchor(source)
    if anchor is not None:
        from idp.saml.metadata_signature import MetadataSignatureError, verify_metadata

        try:
            return verify_metadata(data, anchor, max_bytes=MAX_DOCUMENT_BYTES)
        except MetadataSignatureError as exc:
            raise SourceError(str(exc)) from None
    if not source.unsigned_ok:
        raise SourceError(
            f"source {source.name} has no trust anchor and is not marked "
            "--unsigned-ok (development only); nothing in it is used"
        )
    try:
        root, _ = parse_document(data)
    except XmlRefused as exc:
        raise SourceError(f"the document is refused: {exc}") from None
    return root


_DURATION = re.compile(
    r"P(?:(?P<years>[0-9]+)Y)?(?:(?P<months>[0-9]+)M)?(?:(?P<days>[0-9]+)D)?"
    r"(?:T(?:(?P<hours>[0-9]+)H)?(?:(?P<minutes>[0-9]+)M)?"
    r"(?:(?P<seconds>[0-9]+)(?:\.[0-9]+)?S)?)?"
)
_DURATION_SECONDS = {
    "years": 365 * 86400,
    "months": 30 * 86400,
    "days": 86400,
    "hours": 3600,
    "minutes": 60,
    "seconds": 1,
}


def parse_duration(value: str) -> int:
    """An xs:duration (``PT6H``, ``P1D``) in whole seconds; ValueError otherwise.

    Years and months are counted as 365 and 30 days: a cache duration is a
    hint for when to look again, not a calendar date.
    """
    match = _DURATION.fullmatch(value.strip())
    if match is None or value.strip() in ("P", "PT") or value.strip().endswith("T"):
        raise ValueError(f"cacheDuration {value[:40]!r} is not an xs:duration")
    seconds = sum(
        int(match[name]) * factor
        for name, factor in _DURATION_SECONDS.items()
        if match[name]
    )
    return min(seconds, 10 * 365 * 86400)


def _valid_until(element: etree._Element) -> dt.datetime | None:
    value = element.get("validUntil")
    if value is None:
        return None
    try:
        return xsdatetime.parse(value.strip())
    except ValueError as exc:
        raise SourceError(
            f"validUntil {value[:40]!r} is not a date and time ({exc})"
        ) from None


def _check_root(
    source: MetadataSource,
    root: etree._Element,
    now: dt.datetime,
    max_valid_until: dt.timedelta,
) -> tuple[dt.datetime | None, int | None]:
    if root.tag not in (_ENTITIES, _ENTITY):
        raise SourceError(
            "the document is not SAML metadata (its root is not "
            "md:EntitiesDescriptor or md:EntityDescriptor)"
        )
    valid_until = _valid_until(root)
    if valid_until is None and trust_anchor(source) is not None:
        # A signed document without validUntil could be replayed for ever.
        raise SourceError(
            "the document has no validUntil; a signed document must say how "
            "long it may be used"
        )
    if valid_until is not None:
        if valid_until <= now:
            raise SourceError(
                f"the document expired at {valid_until:%Y-%m-%d %H:%M:%S} UTC "
                "(validUntil)"
            )
        if valid_until > now + max_valid_until:
            raise SourceError(
                f"the document's validUntil {valid_until:%Y-%m-%d %H:%M:%S} UTC "
                f"is more than {max_valid_until.days} days away "
                "(idp.metadata_max_validity_days)"
            )
    cache_duration = None
    if root.get("cacheDuration") is not None:
        try:
            cache_duration = parse_duration(root.get("cacheDuration"))
        except ValueError as exc:
            raise SourceError(str(exc)) from None
    return valid_until, cache_duration


# --------------------------------------------------------------------------
# Entities


def display_id(entity_id: str) -> str:
    """An entityID as quarantine lists it: as it is when it could be
    registered, else escaped and cut short (a hostile one could carry
    terminal escapes, or be too long for the database's index)."""
    if (
        entity_id.isprintable()
        and len(entity_id.encode("utf-8")) <= MAX_ENTITY_ID_LENGTH
    ):
        return entity_id
    shown = entity_id[:120].encode("unicode_escape").decode("ascii")
    cut = "..." if len(entity_id) > 120 else ""
    return f"{shown}{cut} ({len(entity_id)} characters)"


@dataclass
class _Entity:
    """One EntityDescriptor of the document, and what became of it."""

    entity_id: str
    element: etree._Element
    inherited_valid_until: dt.datetime | None
    text: str = ""
    sha256: str = ""
    valid_until: dt.datetime | None = None  # what the standalone text says
    parsed: SpMetadata | None = None
    # Only its validUntil differs from the registered copy (a federation
    # re-signs its aggregate daily with a new one): nothing else to check.
    revalidated: bool = False
    # Its registered metadata, parsed (None: not registered, or unusable);
    # read once for the host check and the diff.
    old: SpMetadata | None = None


def _walk(root: etree._Element) -> Iterator[tuple[etree._Element, dt.datetime | None]]:
    """Every EntityDescriptor in document order, nested EntitiesDescriptors
    included, with the earliest validUntil of the groups around it."""
    if root.tag == _ENTITY:
        yield root, None
        return
    stack: list[tuple[etree._Element, dt.datetime | None]] = [
        (root, _valid_until(root))
    ]
    while stack:
        element, inherited = stack.pop()
        if element.tag == _ENTITY:
            yield element, inherited
            continue
        own = _valid_until(element)
        inherited = _earliest(inherited, own)
        stack.extend(
            (child, inherited)
            for child in reversed(element)
            if child.tag in (_ENTITY, _ENTITIES)
        )


def _earliest(
    first: dt.datetime | None, second: dt.datetime | None
) -> dt.datetime | None:
    if first is None or second is None:
        return first or second
    return min(first, second)


def _standalone(entity: _Entity) -> None:
    """The entity as its own document, with the validUntil it inherits."""
    element = entity.element
    inherited = entity.inherited_valid_until
    if inherited is not None:
        try:
            own = _valid_until(element)
        except SourceError:
            own = None  # parse_sp_metadata names the bad value
        if own is None or inherited < own:
            element.set("validUntil", inherited.strftime("%Y-%m-%dT%H:%M:%SZ"))
            own = inherited
        entity.valid_until = own
    # lxml writes the namespace declarations in scope on the entity's own
    # element, so the fragment reads alone exactly as it read in place.
    entity.text = etree.tostring(element, encoding="unicode")
    entity.sha256 = hashlib.sha256(entity.text.encode("utf-8")).hexdigest()


_VALID_UNTIL_ATTRIBUTE = re.compile(r'\svalidUntil="[^"]*"')


def _without_valid_until(text: str) -> str:
    """``text`` with its root's validUntil left out (lxml escapes ``>`` in
    attribute values, so the first one ends the start tag)."""
    end = text.find(">")
    return _VALID_UNTIL_ATTRIBUTE.sub("", text[:end], count=1) + text[end:]


def _same_but_validity(
    entity: _Entity, sp: ServiceProvider | None, now: dt.datetime
) -> bool:
    """Whether the entity is its registered copy with only a later validUntil.

    The content already passed every check when it was registered; what
    depends on time is its validity, which must still lie ahead.
    """
    if sp is None or entity.element.find(_SIGNATURE) is not None:
        return False
    _standalone(entity)
    if entity.valid_until is not None and entity.valid_until <= now:
        return False
    return entity.sha256 == sp.metadata_sha256 or _without_valid_until(
        entity.text
    ) == _without_valid_until(sp.metadata_xml)


def _check_entity(
    source: MetadataSource, entity: _Entity, now: dt.datetime, anchor
) -> str | None:
    """Why the entity cannot be registered (one line), or None."""
    if entity.element.find(_SIGNATURE) is not None:
        # Its own signature, beside the document's: it must verify too.
        if anchor is None:
            return "carries a signature, but its source has no trust anchor to check it"
        from idp.saml.metadata_signature import (
            MetadataSignatureError,
            verify_metadata,
        )

        try:
            verify_metadata(etree.tostring(entity.element), anchor)
        except MetadataSignatureError as exc:
            return f"bad signature on the entity: {exc}"
    if not entity.text:
        _standalone(entity)
    try:
        entity.parsed = parse_sp_metadata(
            entity.text.encode("utf-8"), now=now, allow_http=source.allow_http
        )
        load_sp_source(entity.entity_id, entity.text)
    except MetadataError as exc:
        return _one_line(str(exc), 300)
    if entity.parsed.entity_id != entity.entity_id:
        return "its entityID does not read the same to the SAML server"
    return None


# --------------------------------------------------------------------------
# Applying a document


def apply_document(
    dbsession: Session,
    source: MetadataSource,
    data: bytes,
    *,
    now: dt.datetime,
    max_valid_until: dt.timedelta,
    progress: Callable[[int, int], None] | None = None,
    by: str = "idp-admin",
    partial: bool = False,
) -> RefreshReport:
    """Apply one copy of the source's document to the registry.

    See the module's docstring for the rules. Raises :class:`SourceError`
    before writing anything when the document as a whole is unusable;
    otherwise writes the source's SPs, quarantine, held changes, refresh
    state and audit events in the caller's transaction (flushed, not
    committed), and raises the registry generation once if any SP changed.
    ``progress(done, total)`` is called every :data:`PROGRESS_EVERY`
    entities and at the end. ``by`` names who applied it in the audit log.

    ``partial``: the document speaks for the entities in it only (an MDQ
    answer, ``idp.saml.mdq``): the source's other SPs, held changes and
    quarantined entries stay, and the source's own copy, validity and
    cache duration are left as they are (each SP's metadata is its copy).
    """
    if not isinstance(data, bytes | bytearray):
        raise SourceError(f"the document must be bytes, not {type(data).__name__}")
    data = bytes(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError("the document is not UTF-8 text") from None
    root = _document_root(source, data)
    valid_until, cache_duration = _check_root(source, root, now, max_valid_until)
    report = RefreshReport(valid_until=valid_until, cache_duration=cache_duration)
    digest = hashlib.sha256(data).hexdigest()
    if not partial:
        source.last_attempt_at = now
        source.last_error = None
        source.failures = 0
        source.valid_until = valid_until
        source.cache_duration = cache_duration
        if digest == source.document_sha256:
            return report
    report.document_changed = True
    found = list(_walk(root))
    total = len(found)
    ours = {
        sp.entity_id: sp
        for sp in dbsession.scalars(
            select(ServiceProvider).where(ServiceProvider.source_id == source.id)
        )
    }
    anchor = trust_anchor(source)
    allowed = set(source.entity_filter or ())
    entities: dict[str, _Entity] = {}
    counts = Counter(element.get("entityID") or "" for element, _ in found)
    for number, (element, inherited) in enumerate(found, 1):
        entity_id = element.get("entityID") or ""
        if progress is not None and number % PROGRESS_EVERY == 0:
            progress(number, total)
        if allowed and entity_id not in allowed:
            report.filtered += 1
            continue
        if element.find(_SP_DESCRIPTOR) is None:
            report.skipped += 1
            continue
        if not entity_id:
            report.quarantined[f"(entity {number} of the document)"] = (
                "EntityDescriptor has no entityID"
            )
            continue
        if counts[entity_id] > 1:
            report.quarantined[display_id(entity_id)] = (
                f"appears {counts[entity_id]} times in the document; "
                "none of them is used"
            )
            continue
        entity = _Entity(entity_id, element, _earliest(valid_until, inherited))
        if _same_but_validity(entity, ours.get(entity_id), now):
            entity.revalidated = True
            entities[entity_id] = entity
            continue
        reason = _check_entity(source, entity, now, anchor)
        if reason is not None:
            report.quarantined[display_id(entity_id)] = reason
            continue
        entities[entity_id] = entity
    if progress is not None:
        progress(total, total)
    named = {element.get("entityID") or "" for element, _ in found}
    _apply(
        dbsession,
        source,
        entities,
        ours,
        report,
        now=now,
        by=by,
        named=named if partial else None,
    )
    if not partial:
        source.document = text
        source.document_sha256 = digest
    return report


def _apply(
    dbsession: Session,
    source: MetadataSource,
    entities: dict[str, _Entity],
    ours: dict[str, ServiceProvider],
    report: RefreshReport,
    *,
    now: dt.datetime,
    by: str,
    named: set[str] | None = None,
) -> None:
    """``named``: for a partial document, the entity IDs it holds; only
    their SPs, held changes and quarantine entries may change."""
    # Written at the end in one go (AuditLog.record_many), in this order.
    audit: list[tuple[str, dict]] = []
    owners = _owners(dbsession, source, set(entities) - set(ours))
    for entity_id in list(entities):
        owner = owners.get(entity_id)
        if owner is not None:
            report.quarantined[entity_id] = (
                f"entityID clash: {entity_id} is already registered {owner}"
            )
            del entities[entity_id]
    _quarantine_host_claims(dbsession, source, entities, ours, report)

    pending = {
        change.entity_id: change
        for change in dbsession.scalars(
            select(PendingChange).where(PendingChange.source_id == source.id)
        )
    }
    release = list(source.release)
    changed = False
    for entity_id, entity in entities.items():
        sp = ours.get(entity_id)
        if entity.revalidated:
            assert sp is not None
            held = pending.pop(entity_id, None)
            if held is not None:
                dbsession.delete(held)
            if sp.metadata_sha256 != entity.sha256:
                sp.metadata_xml = entity.text
                sp.metadata_sha256 = entity.sha256
                sp.metadata_valid_until = entity.valid_until
                changed = True
            report.unchanged.append(entity_id)
            continue
        parsed = entity.parsed
        assert parsed is not None
        if sp is None:
            sp = registry.new_sp(parsed)
            sp.source_id = source.id
            sp.module_id = source.module_id
            sp.attributes_released = list(release)
            registry.store_metadata(sp, entity.text, entity.sha256, parsed)
            dbsession.add(sp)
            report.added.append(entity_id)
            changed = True
            continue
        held = pending.pop(entity_id, None)
        if sp.metadata_sha256 == entity.sha256:
            if held is not None:
                dbsession.delete(held)
            report.unchanged.append(entity_id)
            continue
        if entity.old is not None:
            diff = registry.trust_changes(entity.old, parsed)
        else:
            try:
                diff = registry.trust_changes(registry.sp_metadata(sp), parsed)
            except MetadataError as exc:
                diff = [f"stored metadata no longer passes the checks: {exc}"]
        if diff and not source.auto_apply:
            if held is None or held.metadata_sha256 != entity.sha256:
                if held is None:
                    held = PendingChange(source_id=source.id, entity_id=entity_id)
                    dbsession.add(held)
                held.metadata_xml = entity.text
                held.metadata_sha256 = entity.sha256
                held.diff = diff
                held.created_at = now
                audit.append(
                    (
                        "sp.metadata_held",
                        {
                            "by": by,
                            "source": source.name,
                            "entity_id": entity_id,
                            "metadata_sha256": entity.sha256,
                            "changes": diff,
                        },
                    )
                )
            report.held.append(entity_id)
            continue
        if held is not None:
            dbsession.delete(held)
        previous = sp.metadata_sha256
        registry.store_metadata(sp, entity.text, entity.sha256, parsed)
        if diff:
            audit.append(
                (
                    "sp.metadata_changed",
                    {
                        "by": by,
                        "source": source.name,
                        "entity_id": entity_id,
                        "previous_sha256": previous,
                        "metadata_sha256": entity.sha256,
                        "changes": diff,
                    },
                )
            )
        report.updated.append(entity_id)
        changed = True

    # Gone from the document (or no longer an SP, or filtered out now):
    # removed. Quarantined ones keep their last good metadata.
    gone = [
        sp
        for entity_id, sp in ours.items()
        if entity_id not in entities
        and entity_id not in report.quarantined
        and (named is None or entity_id in named)
    ]
    for sp in gone:
        report.removed.append(sp.entity_id)
    for start in range(0, len(gone), 500):
        ids = [sp.id for sp in gone[start : start + 500]]
        dbsession.execute(
            delete(ServiceProvider)
            .where(ServiceProvider.id.in_(ids))
            .execution_options(synchronize_session=False)
        )
    for sp in gone:
        dbsession.expunge(sp)
    changed = changed or bool(gone)
    for held in pending.values():
        # Held for an entity that is now gone or quarantined: obsolete.
        if named is None or held.entity_id in named:
            dbsession.delete(held)
    _record_quarantine(dbsession, source, report, now, named)
    if changed:
        registry.bump_generation(dbsession)
    audit.append(
        (
            "source.refreshed",
            {
                "by": by,
                "source": source.name,
                "added": report.added,
                "updated": report.updated,
                "removed": report.removed,
                "held": report.held,
                "quarantined": report.quarantined,
                "skipped": report.skipped,
                "filtered": report.filtered,
            },
        )
    )
    AuditLog(dbsession).record_many(audit)
    dbsession.flush()


def _owners(
    dbsession: Session, source: MetadataSource, entity_ids: set[str]
) -> dict[str, str]:
    """entityID -> who registered it, for those another source or
    ``sp import`` registered."""
    owners: dict[str, str] = {}
    if not entity_ids:
        return owners
    names = dict(
        dbsession.execute(select(MetadataSource.id, MetadataSource.name)).all()
    )
    rows = dbsession.execute(
        select(ServiceProvider.entity_id, ServiceProvider.source_id)
    ).all()
    for entity_id, source_id in rows:
        if entity_id in entity_ids and source_id != source.id:
            owners[entity_id] = (
                "by 'sp import' (a manual SP)"
                if source_id is None
                else f"by the source {names.get(source_id, source_id)!r}"
            )
    return owners


def _quarantine_host_claims(
    dbsession: Session,
    source: MetadataSource,
    entities: dict[str, _Entity],
    ours: dict[str, ServiceProvider],
    report: RefreshReport,
) -> None:
    """SAML-29: quarantine entities whose endpoints move onto another's host.

    Hosts an entity already had stay its own. A host two entities of this
    document both newly claim is contested, and neither gets it.
    """
    checked: dict[str, tuple[SpMetadata, SpMetadata | None, frozenset[str]]] = {}
    for entity_id, entity in entities.items():
        if entity.revalidated:
            continue  # its hosts are those it has
        assert entity.parsed is not None
        sp = ours.get(entity_id)
        old = None
        if sp is not None:
            try:
                old = registry.sp_metadata(sp)
            except MetadataError:
                old = None
        entity.old = old
        had = registry.endpoint_hosts(old) if old is not None else frozenset()
        added = registry.endpoint_hosts(entity.parsed) - had
        checked[entity_id] = (entity.parsed, old, added)
    if not any(added for _new, _old, added in checked.values()):
        return
    in_use = registry.hosts_in_use(
        dbsession, {entity_id: old for entity_id, (_n, old, _a) in checked.items()}
    )
    for entity_id, (_new, _old, added) in checked.items():
        for host in added:
            in_use.setdefault(host, set()).add(entity_id)
    confirmed = source.confirmed_hosts or {}
    for entity_id, (new, old, _added) in checked.items():
        claims = registry.claimed_hosts(new, old, in_use, confirmed.get(entity_id, ()))
        if claims:
            report.quarantined[entity_id] = (
                "endpoints on a host another entity uses: "
                f"{registry.describe_claims(claims)}; confirm with "
                f"'source approve {source.name} {entity_id} --confirm-host HOST'"
            )
    for entity_id in report.quarantined:
        entities.pop(entity_id, None)


def _record_quarantine(
    dbsession: Session,
    source: MetadataSource,
    report: RefreshReport,
    now: dt.datetime,
    named: set[str] | None = None,
) -> None:
    existing = {
        row.entity_id: row
        for row in dbsession.scalars(
            select(QuarantinedEntity).where(QuarantinedEntity.source_id == source.id)
        )
    }
    for entity_id, reason in report.quarantined.items():
        row = existing.pop(entity_id, None)
        if row is None:
            dbsession.add(
                QuarantinedEntity(
                    source_id=source.id,
                    entity_id=entity_id,
                    reason=reason,
                    first_seen_at=now,
                    last_seen_at=now,
                )
            )
        else:
            row.reason = reason
            row.last_seen_at = now
    for row in existing.values():
        if named is None or row.entity_id in named:
            dbsession.delete(row)


# --------------------------------------------------------------------------
# An operator's decisions


def approve(
    dbsession: Session,
    source: MetadataSource,
    entity_id: str | None,
    *,
    now: dt.datetime,
    max_valid_until: dt.timedelta,
    confirm_hosts: tuple[str, ...] = (),
    by: str = "idp-admin",
) -> list[str]:
    """Apply what an operator approved; return the entity IDs it registered.

    Without ``confirm_hosts``: the held trust changes of ``entity_id`` (every
    held change when None) are applied, each checked again as of ``now``
    and audited (``sp.metadata_changed``, ``approved``). With them (SAML-29):
    ``entity_id`` may use those hosts from now on (kept on the source and
    audited, ``source.host_confirmed``), and the last good copy of the
    document is applied again so that the entity leaves quarantine. Raises
    :class:`SourceError` naming what is wrong; nothing is written then.
    """
    if confirm_hosts:
        if entity_id is None:
            raise SourceError("--confirm-host needs one entity ID, not --all")
        return _confirm_hosts(
            dbsession,
            source,
            entity_id,
            confirm_hosts,
            now=now,
            max_valid_until=max_valid_until,
            by=by,
        )
    query = select(PendingChange).where(PendingChange.source_id == source.id)
    if entity_id is not None:
        query = query.where(PendingChange.entity_id == entity_id)
    changes = list(dbsession.scalars(query.order_by(PendingChange.entity_id)))
    if not changes:
        raise SourceError(
            f"no change of {entity_id} is held for source {source.name}"
            if entity_id is not None
            else f"no change is held for source {source.name}"
        )
    audit: list[tuple[str, dict]] = []
    in_use = registry.hosts_in_use(dbsession)
    confirmed = source.confirmed_hosts or {}
    approved = []
    ours = {
        sp.entity_id: sp
        for sp in dbsession.scalars(
            select(ServiceProvider).where(ServiceProvider.source_id == source.id)
        )
    }
    for change in changes:
        sp = ours.get(change.entity_id)
        if sp is None:
            raise SourceError(f"{change.entity_id} is no longer registered")
        try:
            parsed = parse_sp_metadata(
                change.metadata_xml.encode("utf-8"),
                now=now,
                allow_http=source.allow_http,
            )
            old = registry.sp_metadata(sp)
        except MetadataError as exc:
            raise SourceError(f"{change.entity_id}: {exc}") from None
        claims = registry.claimed_hosts(
            parsed, old, in_use, confirmed.get(change.entity_id, ())
        )
        if claims:
            raise SourceError(
                f"{change.entity_id} lists endpoints on a host another entity "
                f"uses: {registry.describe_claims(claims)}; approve it with "
                "--confirm-host HOST once you know the host serves both"
            )
        previous = sp.metadata_sha256
        registry.store_metadata(sp, change.metadata_xml, change.metadata_sha256, parsed)
        audit.append(
            (
                "sp.metadata_changed",
                {
                    "by": by,
                    "source": source.name,
                    "entity_id": change.entity_id,
                    "approved": True,
                    "previous_sha256": previous,
                    "metadata_sha256": change.metadata_sha256,
                    "changes": change.diff,
                },
            )
        )
        approved.append(change.entity_id)
        dbsession.delete(change)
    AuditLog(dbsession).record_many(audit)
    registry.bump_generation(dbsession)
    dbsession.flush()
    return approved


def _confirm_hosts(
    dbsession: Session,
    source: MetadataSource,
    entity_id: str,
    hosts: tuple[str, ...],
    *,
    now: dt.datetime,
    max_valid_until: dt.timedelta,
    by: str,
) -> list[str]:
    quarantined = dbsession.scalar(
        select(QuarantinedEntity).where(
            QuarantinedEntity.source_id == source.id,
            QuarantinedEntity.entity_id == entity_id,
        )
    )
    if quarantined is None:
        raise SourceError(f"{entity_id} is not quarantined in source {source.name}")
    wanted = sorted({host.strip().lower() for host in hosts if host.strip()})
    if not wanted:
        raise SourceError("--confirm-host needs a host name")
    if source.document is None:
        raise SourceError(f"source {source.name} holds no document to apply again")
    confirmed = dict(source.confirmed_hosts or {})
    confirmed[entity_id] = sorted({*confirmed.get(entity_id, ()), *wanted})
    source.confirmed_hosts = confirmed
    AuditLog(dbsession).record(
        "source.host_confirmed",
        detail={
            "by": by,
            "source": source.name,
            "entity_id": entity_id,
            "hosts": wanted,
        },
    )
    # Apply the last good copy again, now that the host is confirmed.
    source.document_sha256 = None
    report = apply_document(
        dbsession,
        source,
        source.document.encode("utf-8"),
        now=now,
        max_valid_until=max_valid_until,
        by=by,
    )
    if entity_id in report.quarantined:
        raise SourceError(
            f"{entity_id} stays quarantined: {report.quarantined[entity_id]}"
        )
    return [entity_id] if entity_id in report.added + report.updated else []
