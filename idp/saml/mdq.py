"""The Metadata Query (MDQ) client: finding an unknown SP at a partner's responder.

An MDQ source is a responder (``GET {base}/entities/{id}``, draft-young-md-query)
whose answers are signed by the source's trust anchor. When an AuthnRequest
names an issuer no SP row has, :class:`Discovery` asks each MDQ source for
that one entity, verifies and applies it under the source's policy
(:func:`idp.saml.sources.apply_document`, in a savepoint of the request's
transaction), and the SSO goes on with the new SP. The SP row is the cache;
the refresher fetches the source's entities again by their cacheDuration
(:func:`refresh_mdq_source`).

Anyone can send an AuthnRequest with any issuer, so a lookup is bounded
before it is made:

* the issuer must look like an entity ID (an absolute URI, at most 1024
  characters);
* **negative cache**: one lookup per entity ID per window (rate limiter
  ``mdq.entity``, 1 per 10 minutes): a random or unknown issuer costs one
  lookup, then nothing until the window has passed;
* **rate limits**: per client address (``mdq.address``) and for the whole
  IdP (``mdq.global``); past either, the request gets the usual "unknown
  service" page and no lookup is made;
* one lookup at a time per process, and a short timeout
  (``idp.mdq_timeout``, whole fetch), so a slow responder holds at most one
  request thread per node, briefly;
* a responder that cannot be reached (no connection, a timeout, a 5xx) is
  not asked again by this process for :data:`UNREACHABLE_SECONDS`: while a
  lookup waits, its request holds a database transaction (on SQLite, the
  one writer's turn), so a dead responder must not cost that on every
  unknown issuer.

The counters live where every rate limiter's do (``ratelimit.storage``),
so the limits hold across nodes.

A source's ``location`` is the request template, with ``{sha1}`` or
``{id}`` where the entity goes: ``https://mdq.example.org/entities/{sha1}``
asks by the SHA-1 form (``%7Bsha1%7D`` and the hex digest, as the
specification writes it), ``.../entities/{id}`` by the percent-encoded
entity ID.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models import MetadataSource, ServiceProvider
from idp.saml.fetch import ACCEPT_METADATA, FetchError, FetchPolicy, fetch
from idp.saml.refresh import BY, Schedule
from idp.saml.sources import RefreshReport, SourceError, apply_document
from idp.saml.sp_metadata import MAX_METADATA_BYTES, is_absolute_uri
from idp.saml.xml import MD_NS, XmlRefused, parse_xml

if TYPE_CHECKING:
    from idp.saml.refresh import Outcome, Refresher

log = logging.getLogger(__name__)

SHA1_PLACEHOLDER = "{sha1}"
ID_PLACEHOLDER = "{id}"
PLACEHOLDERS = (SHA1_PLACEHOLDER, ID_PLACEHOLDER)
MAX_ENTITY_ID = 1024
# Who the audit log says registered an SP found on first sight.
LOOKUP_BY = "mdq lookup"
_ENTITY_DESCRIPTOR = f"{{{MD_NS}}}EntityDescriptor"
# One lookup at a time in this process: a responder that hangs can hold at
# most one request thread per node.
LOOKUP_SLOT = threading.Semaphore(1)
UNREACHABLE_SECONDS = 60.0


class Unreachable:
    """Responders (by location) this process gave up on for a while."""

    def __init__(self, seconds: float = UNREACHABLE_SECONDS) -> None:
        self.seconds = seconds
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def failed(self, location: str) -> None:
        with self._lock:
            self._until[location] = time.monotonic() + self.seconds

    def reached(self, location: str) -> None:
        with self._lock:
            self._until.pop(location, None)

    def skip(self, location: str) -> bool:
        with self._lock:
            until = self._until.get(location)
            if until is not None and until <= time.monotonic():
                del self._until[location]
                return False
            return until is not None

    def clear(self) -> None:
        with self._lock:
            self._until.clear()


UNREACHABLE = Unreachable()


class MdqError(ValueError):
    """An MDQ base URL or template that cannot be used; says why."""


def template(base_url: str, *, sha1: bool) -> str:
    """The ``location`` of an MDQ source from its base URL (without /entities)."""
    base = base_url.strip().rstrip("/")
    if any(placeholder in base for placeholder in PLACEHOLDERS) or "?" in base:
        raise MdqError("the MDQ base URL must be the part before /entities/")
    return f"{base}/entities/{SHA1_PLACEHOLDER if sha1 else ID_PLACEHOLDER}"


def entity_url(location: str, entity_id: str) -> str:
    """The URL asking ``location`` (a template, see above) for ``entity_id``."""
    if location.endswith(SHA1_PLACEHOLDER):
        digest = hashlib.sha1(entity_id.encode("utf-8")).hexdigest()  # noqa: S324 (MDQ names entities by SHA-1)
        return location.removesuffix(SHA1_PLACEHOLDER) + "%7Bsha1%7D" + digest
    if location.endswith(ID_PLACEHOLDER):
        return location.removesuffix(ID_PLACEHOLDER) + quote(entity_id, safe="")
    raise MdqError(
        f"an MDQ location must end in {SHA1_PLACEHOLDER} or {ID_PLACEHOLDER}"
    )


def base_url(location: str) -> str:
    """The base URL of an MDQ ``location`` (what ``source add --mdq`` took)."""
    for placeholder in PLACEHOLDERS:
        if location.endswith(placeholder):
            return location.removesuffix(f"/entities/{placeholder}")
    return location


def policy_for_lookups(settings: Mapping[str, Any]) -> FetchPolicy:
    """The fetch policy of a lookup made while a user waits: short and small."""
    timeout = float(settings["idp.mdq_timeout"])
    return FetchPolicy.from_settings(
        settings,
        timeout=timeout,
        connect_timeout=min(
            timeout, float(settings["idp.metadata_fetch_connect_timeout"])
        ),
        max_bytes=min(MAX_METADATA_BYTES, settings["idp.metadata_fetch_max_bytes"]),
    )


def _check_answer(data: bytes, entity_id: str, url: str) -> None:
    """The answer must be the one EntityDescriptor asked for.

    A refusal filter only (nothing is used before the signature is verified
    by apply_document): an aggregate or another entity answering a
    per-entity query is not what was asked, whoever signed it.
    """
    try:
        root = parse_xml(data)
    except XmlRefused as exc:
        raise SourceError(f"{url}: {exc}") from None
    if root.tag != _ENTITY_DESCRIPTOR:
        raise SourceError(f"{url}: the answer is not one EntityDescriptor")
    if root.get("entityID") != entity_id:
        raise SourceError(
            f"{url}: the answer describes {root.get('entityID')!r}, "
            "not the entity asked for"
        )


@dataclass(frozen=True)
class Found:
    """A lookup's result at one source: the document, or why there is none."""

    source: str
    data: bytes | None
    error: str | None = None
    missing: bool = False
    unreachable: bool = False


def look_up(
    source_location: str, entity_id: str, policy: FetchPolicy, name: str
) -> Found:
    """Ask one responder for ``entity_id``; never raises."""
    try:
        url = entity_url(source_location, entity_id)
    except MdqError as exc:
        return Found(name, None, str(exc))
    try:
        fetched = fetch(url, policy=policy, accept=ACCEPT_METADATA)
    except FetchError as exc:
        if exc.status == 404:
            return Found(name, None, missing=True)
        down = exc.status is None or exc.status >= 500
        return Found(name, None, str(exc), unreachable=down)
    assert fetched.body is not None
    try:
        _check_answer(fetched.body, entity_id, url)
    except SourceError as exc:
        return Found(name, None, str(exc))
    return Found(name, fetched.body)


class Discovery:
    """Looks up unknown issuers at the MDQ sources, within the bounds above.

    Built per request (it holds the request's database session and rate
    limiter); calling it with an entity ID returns the new SP row, or None
    when no source has (or may be asked for) the entity.
    """

    def __init__(
        self,
        dbsession: Session,
        settings: Mapping[str, Any],
        limiter: Any,
        client_address: str | None,
        *,
        now: dt.datetime | None = None,
    ) -> None:
        self.dbsession = dbsession
        self.settings = settings
        self.limiter = limiter
        self.client_address = client_address or "-"
        self.now = now

    def _sources(self) -> list[MetadataSource]:
        return list(
            self.dbsession.scalars(
                select(MetadataSource)
                .where(MetadataSource.kind == "mdq")
                .order_by(MetadataSource.name)
            )
        )

    def _allowed(self, entity_id: str) -> bool:
        """Count the lookup against the limits; False (and no lookup) past one."""
        if not self.limiter.check("mdq.entity", entity_id).allowed:
            return False
        for name, key in (("mdq.address", self.client_address), ("mdq.global", "*")):
            if not self.limiter.hit(name, key).allowed:
                # INFO: a flood of random issuers must not flood the log too.
                log.info(
                    "MDQ lookup of %s not made: the %s limit is reached",
                    entity_id,
                    name,
                )
                return False
        return self.limiter.hit("mdq.entity", entity_id).allowed

    def __call__(self, entity_id: str) -> ServiceProvider | None:
        if not entity_id or len(entity_id) > MAX_ENTITY_ID:
            return None
        if not entity_id.isprintable() or not is_absolute_uri(entity_id):
            # Never looked up, nor logged: control characters in a log line
            # could forge or hide others.
            return None
        sources = self._sources()
        if not sources:
            return None
        # Taken before the counters: a database limiter's row lock lasts
        # until the request commits, so only the one request of this process
        # that may look up ever waits for another node's.
        if not LOOKUP_SLOT.acquire(blocking=False):
            log.info("MDQ lookup of %s not made: another is under way", entity_id)
            return None
        try:
            if not self._allowed(entity_id):
                return None
            return self._look_up(sources, entity_id)
        finally:
            LOOKUP_SLOT.release()

    def _look_up(
        self, sources: list[MetadataSource], entity_id: str
    ) -> ServiceProvider | None:
        policy = policy_for_lookups(self.settings)
        schedule = Schedule.from_settings(self.settings)
        for source in sources:
            if UNREACHABLE.skip(source.location):
                continue
            found = look_up(source.location, entity_id, policy, source.name)
            if found.unreachable:
                UNREACHABLE.failed(source.location)
            else:
                UNREACHABLE.reached(source.location)
            if found.data is None:
                if not found.missing:
                    log.warning(
                        "MDQ source %s: lookup of %s failed: %s",
                        source.name,
                        entity_id,
                        found.error,
                    )
                continue
            now = self.now or dt.datetime.now(dt.UTC)
            try:
                with self.dbsession.begin_nested():
                    report = apply_document(
                        self.dbsession,
                        source,
                        found.data,
                        now=now,
                        max_valid_until=schedule.max_valid,
                        by=LOOKUP_BY,
                        partial=True,
                    )
                    if report.added or report.updated:
                        _sooner(source, schedule, now, report)
            except SourceError as exc:
                log.warning(
                    "MDQ source %s: %s refused: %s", source.name, entity_id, exc
                )
                continue
            sp = self.dbsession.scalar(
                select(ServiceProvider).where(ServiceProvider.entity_id == entity_id)
            )
            if sp is not None and sp.source_id == source.id:
                log.info(
                    "MDQ source %s: found and registered %s", source.name, entity_id
                )
                return sp
            reason = report.quarantined.get(entity_id, "not an SP, or filtered out")
            log.warning(
                "MDQ source %s: %s not registered: %s", source.name, entity_id, reason
            )
        return None


def _sooner(
    source: MetadataSource,
    schedule: Schedule,
    now: dt.datetime,
    report: RefreshReport,
) -> None:
    """Bring the source's next refresh forward to the new entity's own."""
    due = schedule.after_success(now, report.cache_duration, report.valid_until)
    if source.next_refresh_at is None or due < source.next_refresh_at:
        source.next_refresh_at = due


def refresh_mdq_source(refresher: Refresher, source_id: int, name: str) -> Outcome:
    """Fetch again every entity an MDQ source brought; keep what fails.

    Each entity is looked up and applied in its own transaction; one that
    fails (the responder is down, a bad signature, 404) keeps its current
    metadata (the backing copy), which stops working only at its validUntil.
    The next refresh is due by the shortest cacheDuration and validUntil
    the answers gave.
    """
    from idp.saml.refresh import Outcome

    with Session(refresher.engine) as session:
        location = session.get_one(MetadataSource, source_id).location
        entities = list(
            session.scalars(
                select(ServiceProvider.entity_id)
                .where(ServiceProvider.source_id == source_id)
                .order_by(ServiceProvider.entity_id)
            )
        )
    policy = replace(
        refresher.policy, max_bytes=min(MAX_METADATA_BYTES, refresher.policy.max_bytes)
    )
    changed = 0
    errors = []
    cache_durations: list[int] = []
    valid_untils: list[dt.datetime] = []
    for entity_id in entities:
        found = look_up(location, entity_id, policy, name)
        if found.data is None:
            errors.append(f"{entity_id}: {found.error or 'not found (HTTP 404)'}")
            continue
        now = refresher.clock()
        try:
            with Session(refresher.engine) as session, session.begin():
                held = refresher.locked(session, source_id)
                if held is None:
                    return Outcome(name, "busy", f"{name}: the lease ran out; stopped")
                report = apply_document(
                    session,
                    held,
                    found.data,
                    now=now,
                    max_valid_until=refresher.schedule.max_valid,
                    by=BY,
                    partial=True,
                )
        except SourceError as exc:
            errors.append(f"{entity_id}: {exc}")
            continue
        if entity_id in report.quarantined:
            errors.append(f"{entity_id}: {report.quarantined[entity_id]}")
        changed += len(report.updated) + len(report.removed)
        if report.cache_duration is not None:
            cache_durations.append(report.cache_duration)
        if report.valid_until is not None:
            valid_untils.append(report.valid_until)
    if errors:
        return refresher.failed(
            source_id,
            f"{len(errors)} of {len(entities)} entities not refreshed; "
            f"first: {errors[0]}",
        )
    now = refresher.clock()
    with Session(refresher.engine) as session, session.begin():
        held = refresher.locked(session, source_id)
        if held is None:
            return Outcome(name, "busy", f"{name}: the lease ran out; stopped")
        held.fetched_at = now
        held.cache_duration = min(cache_durations, default=None)
        held.valid_until = min(valid_untils, default=None)
        refresher.succeeded(held, now)
    line = f"{name}: {len(entities)} entities looked up again, {changed} changed"
    return Outcome(name, "updated" if changed else "unchanged", line)
