"""``source add|list|show|refresh|approve|remove``: partners' metadata sources.

A source brings many SPs at once from a partner's document (a federation
aggregate or one entity): see :mod:`idp.saml.sources` for what a refresh
does. Each command runs in one transaction and prints after it committed;
a refresh that fails leaves the registry as it was and records the error
on the source (``source show``), in a transaction of its own.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from idp.cli.common import CommandError, confirmed, load_settings
from idp.models import (
    MetadataSource,
    Module,
    PendingChange,
    QuarantinedEntity,
    ServiceProvider,
)
from idp.models.source import SOURCE_NAME_PATTERN
from idp.saml import registry, sources
from idp.saml.sources import SourceError, apply_document, read_file, trust_anchor
from idp.saml.sp_metadata import MetadataError

_NAME = re.compile(SOURCE_NAME_PATTERN)


def register(groups) -> None:
    parser = groups.add_parser(
        "source",
        help="partners' metadata sources (many SPs from one signed document)",
    )
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)

    add = commands.add_parser(
        "add",
        help="add a source and apply its document once (nothing is kept if "
        "the document as a whole is refused)",
    )
    add.add_argument("name", metavar="NAME", help="a-z, 0-9 and '-', up to 64")
    where = add.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--file", metavar="PATH", help="a document on this machine, read at refresh"
    )
    where.add_argument(
        "--upload",
        metavar="PATH",
        help="a document copied now into the metadata folder under a new name",
    )
    where.add_argument(
        "--url",
        metavar="URL",
        help="an https URL the document is fetched from now and at every "
        "refresh (conditional GET; the last good copy stays in force when a "
        "fetch fails)",
    )
    where.add_argument(
        "--mdq",
        metavar="BASEURL",
        help="a Metadata Query responder (the URL before /entities/), asked "
        "for each SP on first sight of its entityID",
    )
    add.add_argument(
        "--mdq-form",
        choices=("sha1", "id"),
        default="sha1",
        help="how --mdq names an entity: {sha1}HEX (the default) or the "
        "percent-encoded entityID",
    )
    add.add_argument(
        "--anchor",
        metavar="PEMFILE|FINGERPRINT",
        help="the partner's signing certificate (a PEM file) or its SHA-256 "
        "fingerprint, obtained out of band",
    )
    add.add_argument(
        "--unsigned-ok",
        action="store_true",
        help="take an unsigned document (development only)",
    )
    add.add_argument("--module", metavar="CODE", help="the module its SPs belong to")
    add.add_argument(
        "--release",
        metavar="NAMES",
        help="attributes its SPs receive, comma-separated (default: "
        f"{','.join(registry.DEFAULT_RELEASE)})",
    )
    add.add_argument(
        "--only",
        nargs="+",
        metavar="ENTITY",
        default=[],
        help="take only these entityIDs from the document",
    )
    add.add_argument(
        "--auto-apply",
        action="store_true",
        help="apply its SPs' key and endpoint changes at refresh, audited, "
        "instead of holding them for 'source approve'",
    )
    add.set_defaults(handler=add_)

    commands.add_parser(
        "list", help="every source: kind, SPs, quarantined, held, validity"
    ).set_defaults(handler=list_)

    show = commands.add_parser(
        "show", help="a source's state, anchor, counts and quarantined entities"
    )
    show.add_argument("name", metavar="NAME")
    show.add_argument(
        "--pending", action="store_true", help="also each held change's diff"
    )
    show.set_defaults(handler=show_)

    refresh = commands.add_parser(
        "refresh",
        help="read a source's document again and apply it (URL sources: "
        "fetched with a conditional GET)",
    )
    target = refresh.add_mutually_exclusive_group(required=True)
    target.add_argument("name", metavar="NAME", nargs="?")
    target.add_argument("--all", action="store_true", help="every source")
    target.add_argument(
        "--loop",
        action="store_true",
        help="keep running: refresh each URL and MDQ source when it is due "
        "(by its cacheDuration), until SIGTERM or SIGINT; safe on several "
        "nodes at once",
    )
    refresh.set_defaults(handler=refresh_)

    approve = commands.add_parser(
        "approve",
        help="apply held changes, or confirm a host a quarantined entity shares",
    )
    approve.add_argument("name", metavar="NAME")
    which = approve.add_mutually_exclusive_group(required=True)
    which.add_argument("entity_id", metavar="ENTITY", nargs="?")
    which.add_argument("--all", action="store_true", help="every held change")
    approve.add_argument(
        "--confirm-host",
        metavar="HOST",
        action="append",
        default=[],
        help="let ENTITY use HOST although another entity's endpoints are "
        "there (SAML-29); repeat for several",
    )
    approve.set_defaults(handler=approve_)

    remove = commands.add_parser(
        "remove",
        help="remove a source and every SP it brought; asks first unless --yes",
    )
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("--yes", action="store_true", help="remove without asking")
    remove.set_defaults(handler=remove_)


@contextmanager
def _transaction(settings: dict) -> Iterator[Session]:
    """One committed transaction; nothing written if anything fails."""
    from idp.db import make_engine

    engine = make_engine(settings)
    try:
        with Session(engine) as session, session.begin():
            yield session
    except (MetadataError, SourceError) as exc:
        raise CommandError(str(exc)) from None
    finally:
        engine.dispose()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _max_valid(settings: dict) -> dt.timedelta:
    return dt.timedelta(days=settings["idp.metadata_max_validity_days"])


def _find(session: Session, name: str) -> MetadataSource:
    source = session.scalar(select(MetadataSource).where(MetadataSource.name == name))
    if source is None:
        raise CommandError(f"no metadata source is named {name!r}")
    return source


def _audit(session: Session, event: str, **detail) -> None:
    from idp.services.audit import AuditLog

    AuditLog(session).record(event, detail={"by": "idp-admin", **detail})


# --------------------------------------------------------------------------
# add


def _anchor(value: str) -> tuple[str | None, str | None]:
    """(PEM certificates, fingerprint) from ``--anchor``: a PEM file or a
    SHA-256 fingerprint."""
    from idp.saml.metadata_signature import MetadataSignatureError, parse_anchor

    text = value
    if Path(value).is_file():
        try:
            text = Path(value).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            raise CommandError(f"cannot read {value} as a PEM certificate") from None
    try:
        anchor = parse_anchor(text)
    except MetadataSignatureError as exc:
        if text is value:
            raise CommandError(
                f"--anchor {value[:80]!r} is neither a readable PEM file nor a "
                "SHA-256 fingerprint"
            ) from None
        raise CommandError(f"{value}: {exc}") from None
    if len(anchor.fingerprints) > 1:
        raise CommandError("give one SHA-256 fingerprint per source")
    return (
        "\n".join(anchor.certificates) or None,
        anchor.fingerprints[0] if anchor.fingerprints else None,
    )


def store_upload(data: bytes, directory: Path, name: str) -> Path:
    """WEB-14: ``data`` written under ``directory`` with a generated file name.

    The operator's file name is never used (``../../certs/x`` cannot reach
    outside): the name is ``source-<NAME>-<random>.xml``, NAME having been
    checked against the source name pattern. Written to a temporary file in
    the same folder, made 0644, then renamed into place, so a reader never
    sees half a document.
    """
    if not _NAME.fullmatch(name):
        raise CommandError(f"invalid source name {name!r}")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"source-{name}-{secrets.token_hex(8)}.xml"
    partial = directory / f".{target.name}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(partial, 0o644)  # whatever the umask
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


def _release(value: str | None) -> list[str]:
    if value is None:
        return list(registry.DEFAULT_RELEASE)
    names = list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    unknown = [name for name in names if name not in registry.RELEASABLE]
    if unknown:
        raise CommandError(
            f"unknown attribute {', '.join(unknown)}; "
            f"releasable: {', '.join(registry.RELEASABLE)}"
        )
    return names


def _fetch_once(url: str, settings: dict):
    """``source add --url``: the document, fetched as every refresh will."""
    from idp.saml.fetch import FetchError, FetchPolicy, fetch

    try:
        return fetch(url, policy=FetchPolicy.from_settings(settings))
    except FetchError as exc:
        raise CommandError(str(exc)) from None


def _mdq_location(args, settings: dict) -> str:
    """``source add --mdq``: the request template, its base URL checked."""
    from idp.redirects import UnsafeUrl, endpoint_url
    from idp.saml.mdq import MdqError, template

    allow_http = bool(
        settings["idp.development"] and settings["idp.metadata_fetch_allow_http"]
    )
    try:
        location = template(args.mdq, sha1=args.mdq_form == "sha1")
        endpoint_url(args.mdq, allow_http=allow_http)
        return location
    except (UnsafeUrl, MdqError) as exc:
        raise CommandError(f"--mdq {args.mdq[:200]}: {exc}") from None


def _schedule_first(source: MetadataSource, fetched, settings: dict) -> None:
    from idp.saml.refresh import Schedule

    source.etag = fetched.etag
    source.last_modified = fetched.last_modified
    source.next_refresh_at = Schedule.from_settings(settings).after_success(
        _now(), source.cache_duration, source.valid_until
    )


def add_(args) -> int:
    settings = load_settings(args.config_uri)
    development = settings["idp.development"]
    if not _NAME.fullmatch(args.name):
        raise CommandError(
            f"invalid source name {args.name!r}: 1 to 64 of a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
    if args.unsigned_ok and not development:
        raise CommandError(
            "--unsigned-ok is for development only (idp.environment = development)"
        )
    if args.anchor is None and not args.unsigned_ok:
        raise CommandError(
            "a source needs --anchor (the partner's signing certificate or its "
            "SHA-256 fingerprint, obtained out of band)"
        )
    anchor_pem, fingerprint = _anchor(args.anchor) if args.anchor else (None, None)
    release = _release(args.release)
    fetched = None
    if args.mdq:
        kind, location, data = "mdq", _mdq_location(args, settings), None
    elif args.url:
        fetched = _fetch_once(args.url, settings)
        kind, location, data = "url", args.url, fetched.body
    else:
        path = args.file or args.upload
        try:
            data = read_file(path)
        except SourceError as exc:
            raise CommandError(str(exc)) from None
        kind = "upload" if args.upload else "file"
        location = str(Path(path).resolve())
    uploaded = None
    if args.upload:
        assert data is not None
        uploaded = store_upload(data, Path(settings["idp.metadata_dir"]), args.name)
        location = str(uploaded)
    try:
        with _transaction(settings) as session:
            if session.scalar(
                select(MetadataSource.id).where(MetadataSource.name == args.name)
            ):
                raise CommandError(f"a metadata source is already named {args.name!r}")
            module_id = None
            if args.module is not None:
                module_id = session.scalar(
                    select(Module.id).where(
                        func.lower(Module.code) == args.module.lower()
                    )
                )
                if module_id is None:
                    raise CommandError(f"no module has the code {args.module!r}")
            source = MetadataSource(
                name=args.name,
                kind=kind,
                location=location,
                anchor_pem=anchor_pem,
                anchor_fingerprint=fingerprint,
                unsigned_ok=args.unsigned_ok,
                module_id=module_id,
                release=release,
                entity_filter=list(dict.fromkeys(args.only)),
                auto_apply=args.auto_apply,
                allow_http=development,
                confirmed_hosts={},
            )
            session.add(source)
            session.flush()
            _audit(
                session,
                "source.added",
                source=source.name,
                kind=source.kind,
                location=source.location,
                anchor=trust_anchor(source).describe() if args.anchor else None,
                unsigned_ok=source.unsigned_ok,
                module=args.module,
                release=release,
                only=source.entity_filter,
                auto_apply=source.auto_apply,
            )
            lines = [f"added source {source.name} ({source.kind} {source.location})"]
            if data is not None:
                report = apply_document(
                    session,
                    source,
                    data,
                    now=_now(),
                    max_valid_until=_max_valid(settings),
                    progress=_progress_printer(),
                )
                source.fetched_at = _now()
                lines += _report_lines(source.name, report)
            if fetched is not None:
                _schedule_first(source, fetched, settings)
                lines.append(f"next refresh: {_when(source.next_refresh_at)}")
            if kind == "mdq":
                lines.append("SPs are looked up there on first sight of their entityID")
    except BaseException:
        if uploaded is not None:
            uploaded.unlink(missing_ok=True)
        raise
    print("\n".join(lines))
    return 0


def _report_lines(name: str, report) -> list[str]:
    lines = [f"{name}: {report.summary()}"]
    for entity_id, reason in sorted(report.quarantined.items()):
        lines.append(f"quarantined {entity_id}: {reason}")
    for entity_id in report.held:
        lines.append(
            f"held {entity_id}: its keys or endpoints change; see "
            f"'source show {name} --pending', then 'source approve'"
        )
    return lines


# --------------------------------------------------------------------------
# refresh


def _progress_printer() -> Callable[[int, int], None]:
    """Progress on stderr: a bar with entities/s and ETA on a terminal,
    a plain line per tenth otherwise."""
    started = time.monotonic()
    tty = sys.stderr.isatty()
    last = {"tenth": 0}

    def show(done: int, total: int) -> None:
        elapsed = max(time.monotonic() - started, 1e-6)
        rate = done / elapsed
        eta = (total - done) / rate if rate else 0.0
        if tty:
            width = 30
            filled = int(width * done / total) if total else width
            bar = "#" * filled + "." * (width - filled)
            end = "\n" if done >= total else ""
            print(
                f"\r[{bar}] {done}/{total} entities, {rate:.0f}/s, ETA {eta:.0f} s",
                end=end,
                file=sys.stderr,
                flush=True,
            )
            return
        tenth = 10 * done // total if total else 10
        if tenth > last["tenth"]:
            last["tenth"] = tenth
            print(
                f"{done}/{total} entities checked ({rate:.0f}/s)",
                file=sys.stderr,
                flush=True,
            )

    return show


def _record_failure(settings: dict, source_id: int, error: str) -> None:
    """The refresh failed: say so on the source, in a transaction of its own."""
    from idp.db import make_engine

    engine = make_engine(settings)
    try:
        with Session(engine) as session, session.begin():
            source = session.get(MetadataSource, source_id)
            if source is not None:
                source.last_attempt_at = _now()
                source.last_error = error
                source.failures = (source.failures or 0) + 1
                _audit(
                    session, "source.refresh_failed", source=source.name, error=error
                )
    finally:
        engine.dispose()


def refresh_(args) -> int:
    settings = load_settings(args.config_uri)
    if args.loop:
        return _refresh_loop(settings)
    with _transaction(settings) as session:
        if args.all:
            targets = list(
                session.execute(
                    select(
                        MetadataSource.id, MetadataSource.name, MetadataSource.kind
                    ).order_by(MetadataSource.name)
                )
            )
        else:
            source = _find(session, args.name)
            targets = [(source.id, source.name, source.kind)]
    if not targets:
        print("no metadata source is configured")
        return 0
    failed = []
    refresher = None
    for source_id, name, kind in targets:
        if kind in ("url", "mdq"):
            if refresher is None:
                refresher = _refresher(settings)
            refresher.progress = _progress_printer()
            outcome = _refresh_fetched(refresher, name)
            if outcome.result == "failed":
                print(f"idp-admin: source {outcome.line}", file=sys.stderr)
                failed.append(name)
            else:
                print(outcome.line)
            continue
        try:
            with _transaction(settings) as session:
                source = session.get(MetadataSource, source_id)
                if source is None:
                    continue  # removed meanwhile
                report = sources.refresh(
                    session,
                    source,
                    now=_now(),
                    max_valid_until=_max_valid(settings),
                    progress=_progress_printer(),
                )
                lines = _report_lines(name, report)
        except CommandError as exc:
            _record_failure(settings, source_id, str(exc))
            print(f"idp-admin: source {name}: {exc}", file=sys.stderr)
            failed.append(name)
            continue
        print("\n".join(lines))
    if refresher is not None:
        refresher.engine.dispose()
    if failed:
        raise CommandError(
            f"{len(failed)} source{'s' if len(failed) > 1 else ''} not refreshed "
            f"({', '.join(failed)}); the last good copy stays in force"
        )
    return 0


def _refresher(settings: dict, **options):
    from idp.db import make_engine
    from idp.saml.refresh import Refresher

    return Refresher.from_settings(settings, make_engine(settings), **options)


def _refresh_fetched(refresher, name: str):
    try:
        return refresher.refresh(name)
    except SourceError as exc:
        raise CommandError(str(exc)) from None


def _refresh_loop(settings: dict) -> int:
    """``source refresh --loop``: each URL and MDQ source when it is due.

    A round that fails (the database restarting) is one line on the log,
    and the next waits a growing, bounded time (idp.services.worker); only
    SIGTERM or SIGINT ends the loop.
    """
    import logging

    from idp.cli.common import stop_on_signals
    from idp.services.worker import Task, keep_running

    refresher = _refresher(settings)
    print(f"refreshing as {refresher.owner}; stop with SIGTERM or SIGINT", flush=True)
    try:
        with stop_on_signals() as stopping:

            def refresh_round() -> float:
                for outcome in refresher.run(stop=stopping.is_set):
                    stream = sys.stderr if outcome.result == "failed" else sys.stdout
                    print(outcome.line, file=stream, flush=True)
                return refresher.seconds_until_due()

            task = Task(
                "refreshing metadata sources",
                refresh_round,
                logging.getLogger(__name__).warning,
                url=refresher.engine.url,
            )
            keep_running([task], stopping)
    finally:
        refresher.engine.dispose()
    return 0


# --------------------------------------------------------------------------
# list, show


def _counts(session: Session, model, source_id: int) -> int:
    return session.scalar(
        select(func.count()).select_from(model).where(model.source_id == source_id)
    )


def _when(value: dt.datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value else "-"


def list_(args) -> int:
    settings = load_settings(args.config_uri)
    with _transaction(settings) as session:
        lines = []
        for source in session.scalars(
            select(MetadataSource).order_by(MetadataSource.name)
        ):
            lines.append(
                "\t".join(
                    (
                        source.name,
                        source.kind,
                        f"{_counts(session, ServiceProvider, source.id)} SPs",
                        f"{_counts(session, QuarantinedEntity, source.id)} quarantined",
                        f"{_counts(session, PendingChange, source.id)} held",
                        f"valid until {_when(source.valid_until)}",
                        "failing" if source.last_error else "ok",
                    )
                )
            )
    print("\n".join(lines) if lines else "no metadata source is configured")
    return 0


def show_(args) -> int:
    settings = load_settings(args.config_uri)
    with _transaction(settings) as session:
        source = _find(session, args.name)
        module = session.get(Module, source.module_id) if source.module_id else None
        anchor = trust_anchor(source)
        lines = [
            f"name:              {source.name}",
            f"kind:              {source.kind}",
            f"location:          {source.location}",
            "trust anchor:      "
            + (
                anchor.describe()
                if anchor
                else "none (unsigned accepted: development only)"
            ),
            f"module:            {module.code if module else '-'}",
            f"release:           {', '.join(source.release) or '-'}",
            "entities:          "
            + (", ".join(source.entity_filter) if source.entity_filter else "all"),
            "trust changes:     "
            + ("applied at refresh" if source.auto_apply else "held for approval"),
            f"document SHA-256:  {source.document_sha256 or '-'}",
            f"valid until:       {_when(source.valid_until)}",
            "cache duration:    "
            + (f"{source.cache_duration} s" if source.cache_duration else "-"),
            f"last read:         {_when(source.fetched_at)}",
            f"last attempt:      {_when(source.last_attempt_at)}",
            *(
                [f"next refresh:      {_when(source.next_refresh_at)}"]
                if source.kind in ("url", "mdq")
                else []
            ),
            f"last error:        {source.last_error or '-'}"
            + (f" ({source.failures} failures)" if source.failures else ""),
            f"SPs:               {_counts(session, ServiceProvider, source.id)}",
        ]
        for entity_id, hosts in sorted((source.confirmed_hosts or {}).items()):
            lines.append(f"confirmed hosts:   {entity_id}: {', '.join(hosts)}")
        quarantined = session.scalars(
            select(QuarantinedEntity)
            .where(QuarantinedEntity.source_id == source.id)
            .order_by(QuarantinedEntity.entity_id)
        ).all()
        lines.append(f"quarantined:       {len(quarantined)}")
        lines.extend(
            f"  {row.entity_id}: {row.reason} (since {_when(row.first_seen_at)})"
            for row in quarantined
        )
        held = session.scalars(
            select(PendingChange)
            .where(PendingChange.source_id == source.id)
            .order_by(PendingChange.entity_id)
        ).all()
        lines.append(f"held changes:      {len(held)}")
        for change in held:
            lines.append(f"  {change.entity_id} (since {_when(change.created_at)})")
            if args.pending:
                lines.extend(f"    {line}" for line in change.diff)
    print("\n".join(lines))
    return 0


# --------------------------------------------------------------------------
# approve, remove


def approve_(args) -> int:
    settings = load_settings(args.config_uri)
    with _transaction(settings) as session:
        source = _find(session, args.name)
        approved = sources.approve(
            session,
            source,
            None if args.all else args.entity_id,
            now=_now(),
            max_valid_until=_max_valid(settings),
            confirm_hosts=tuple(args.confirm_host),
        )
    for entity_id in approved:
        print(f"approved {entity_id}")
    if not approved:
        print("nothing registered")
    return 0


def remove_(args) -> int:
    settings = load_settings(args.config_uri)
    if not args.yes:
        # Counted first, and asked outside any transaction (a SQLite writer
        # lock held while a person thinks stops every node).
        with _transaction(settings) as session:
            source = _find(session, args.name)
            source_id = source.id
            sps = _counts(session, ServiceProvider, source.id)
        print(
            f"This deletes the source {args.name} and the {sps} SP"
            f"{'' if sps == 1 else 's'} it brought (their persistent NameIDs "
            "too: registered again, they would get new ones)"
        )
        if not confirmed(f"Remove source {args.name}?"):
            raise CommandError("not removed: not confirmed (answer yes, or pass --yes)")
    with _transaction(settings) as session:
        source = _find(session, args.name)
        if not args.yes and source.id != source_id:
            raise CommandError(f"not removed: {args.name} was added again meanwhile")
        entity_ids = list(
            session.scalars(
                select(ServiceProvider.entity_id)
                .where(ServiceProvider.source_id == source.id)
                .order_by(ServiceProvider.entity_id)
            )
        )
        for start in range(0, len(entity_ids), 500):
            batch = entity_ids[start : start + 500]
            session.execute(
                ServiceProvider.__table__.delete().where(
                    ServiceProvider.entity_id.in_(batch)
                )
            )
        upload = Path(source.location) if source.kind == "upload" else None
        _audit(
            session,
            "source.removed",
            source=source.name,
            kind=source.kind,
            removed=entity_ids,
        )
        session.delete(source)
        if entity_ids:
            registry.bump_generation(session)
    if upload is not None:
        upload.unlink(missing_ok=True)
    print(
        f"removed source {args.name} and {len(entity_ids)} SP"
        f"{'' if len(entity_ids) == 1 else 's'}"
    )
    return 0
