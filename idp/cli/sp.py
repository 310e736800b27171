"""``sp import|list|show|policy|remove|enable|disable``: the SP registry.

Each command runs in one transaction and prints only after it committed;
every change raises the registry generation, so each running node rebuilds
its SAML server on its next request. The changes (import, policy, enable,
disable, remove), their refusals and their audit events are
:class:`idp.services.service_providers.ServiceProviders`'s, which the admin
console calls too; these commands read files, parse options, confirm,
call it with the operator as the actor and print.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from idp.cli.common import CommandError, app_request, load_settings
from idp.cli.common import confirmed as confirmed_answer
from idp.db import make_engine
from idp.models import ServiceProvider
from idp.saml import registry
from idp.saml.sp_metadata import (
    MAX_METADATA_BYTES,
    MetadataError,
    SpMetadata,
)
from idp.services.service_providers import describe_sp


def register(groups) -> None:
    parser = groups.add_parser("sp", help="registered SAML service providers")
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)
    import_parser = commands.add_parser(
        "import",
        help="register an SP from its metadata file, or refresh a registered one",
    )
    import_parser.add_argument("file", metavar="FILE", help="the SP's metadata XML")
    import_parser.add_argument(
        "--module", metavar="CODE", help="the module the SP belongs to"
    )
    import_parser.add_argument(
        "--disabled",
        action="store_true",
        help="register it disabled (no sign-in until 'sp enable')",
    )
    import_parser.add_argument(
        "--replace",
        action="store_true",
        help="accept new keys or endpoints for an SP already registered "
        "(the changes are printed and audited)",
    )
    import_parser.add_argument(
        "--confirm-host",
        metavar="HOST",
        action="append",
        default=[],
        help="let the SP's endpoints use HOST although another SP's are there "
        "too (SAML-29; only once you know the host serves both)",
    )
    import_parser.set_defaults(handler=import_)
    check = commands.add_parser(
        "check",
        help="list SP certificates and metadata expiring within N days; "
        "exit 1 if any (for cron and monitoring)",
    )
    check.add_argument(
        "--days", type=int, default=30, metavar="N", help="how far ahead (30)"
    )
    check.set_defaults(handler=check_)
    commands.add_parser(
        "list", help="every SP: entity ID, module, enabled, ACS count"
    ).set_defaults(handler=list_)
    _register_policy(commands)
    for name, handler, text in (
        ("show", show, "an SP's policy and endpoints"),
        (
            "remove",
            remove,
            "unregister an SP, saying what goes with it (its persistent NameIDs "
            "too); asks first unless --yes",
        ),
        ("enable", enable, "let users sign in to an SP again"),
        ("disable", disable, "stop issuing assertions to an SP"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("entity_id", metavar="ENTITY_ID")
        if name == "remove":
            command.add_argument(
                "--yes", action="store_true", help="remove without asking"
            )
        command.set_defaults(handler=handler)


_UNSET = object()  # an option not given (None means "back to the default")


def _yes_no(value: str) -> bool:
    import argparse

    if value in ("yes", "no"):
        return value == "yes"
    raise argparse.ArgumentTypeError("say yes or no")


def _int_or_default(value: str) -> int | None:
    import argparse

    if value == "default":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a number, or 'default'") from None


def _register_policy(commands) -> None:
    policy = commands.add_parser(
        "policy",
        help="change what an SP receives and how (only the options given change)",
    )
    policy.add_argument("entity_id", metavar="ENTITY_ID")
    policy.add_argument(
        "--release",
        metavar="NAMES",
        help="comma-separated attribute FriendlyNames, e.g. uid,displayName,mail,"
        "isMemberOf ('' for none); see 'sp show'",
    )
    policy.add_argument(
        "--name-id-format", choices=sorted(registry.NAME_ID_FORMATS), metavar="FORMAT"
    )
    for flag, text in (
        ("--sign-response", "sign the Response"),
        ("--sign-assertion", "sign the Assertion"),
        ("--encrypt", "encrypt the Assertion (needs the SP's encryption key)"),
        ("--allow-sha1", "accept this SP's SHA-1 signatures (legacy only)"),
        (
            "--global-uid",
            "release the account's global uid, the same at every SP that has it, "
            "instead of one made for this SP (lets those SPs correlate people)",
        ),
    ):
        policy.add_argument(flag, type=_yes_no, metavar="yes|no", help=text)
    policy.add_argument(
        "--authn-context",
        metavar="URI",
        help="the only AuthnContext class asserted to this SP ('none' to clear)",
    )
    policy.add_argument(
        "--clock-skew", type=_int_or_default, default=_UNSET, metavar="SECONDS|default"
    )
    policy.add_argument(
        "--relay-state-max",
        type=_int_or_default,
        default=_UNSET,
        metavar="BYTES|default",
    )
    policy.add_argument(
        "--encryption-method",
        choices=[*registry.ENCRYPTION_METHODS, "auto"],
        metavar="METHOD",
        help="the assertion's data encryption for a legacy SP whose metadata "
        f"misleads: {', '.join(registry.ENCRYPTION_METHODS)}; 'auto' (the default) "
        "takes the strongest the metadata lists, AES-256-GCM when it lists none",
    )
    policy.set_defaults(handler=set_policy)


def set_policy(args) -> int:
    changes: dict = {}
    if args.release is not None:
        changes["attributes_released"] = [
            name.strip() for name in args.release.split(",") if name.strip()
        ]
    if args.name_id_format is not None:
        changes["name_id_format"] = args.name_id_format
    for option, key in (
        ("sign_response", "sign_response"),
        ("sign_assertion", "sign_assertion"),
        ("encrypt", "encrypt_assertion"),
        ("allow_sha1", "allow_sha1"),
        ("global_uid", "global_uid"),
    ):
        if getattr(args, option) is not None:
            changes[key] = getattr(args, option)
    if args.authn_context is not None:
        changes["required_authn_context"] = (
            None if args.authn_context == "none" else args.authn_context
        )
    if args.clock_skew is not _UNSET:
        changes["clock_skew"] = args.clock_skew
    if args.relay_state_max is not _UNSET:
        changes["relay_state_max"] = args.relay_state_max
    if args.encryption_method is not None:
        changes["encryption_method"] = (
            None if args.encryption_method == "auto" else args.encryption_method
        )
    if not changes:
        raise CommandError("nothing to change; see 'sp policy --help'")
    with _service(args.config_uri) as sps:
        sp = sps.set_policy(args.entity_id, changes, actor=_actor())
        lines = _describe(sp, _parsed(sp))
    print("\n".join(lines))
    return 0


@contextmanager
def _service(config_uri: str) -> Iterator:
    """The SP registry service, in one committed transaction (:func:`app_request`).

    Its refusals become one line; so does stored metadata that no longer
    parses when a command describes the SP.
    """
    from idp.services.interfaces import IServiceProviders

    try:
        with app_request(config_uri) as request:
            yield request.service(IServiceProviders)
    except MetadataError as exc:
        raise CommandError(str(exc)) from None


def _actor():
    from idp.services.actor import Actor

    return Actor.command_line()


@contextmanager
def _transaction(config_uri: str) -> Iterator[Session]:
    """One committed transaction; any failure is one line, nothing written.

    Database errors propagate to :func:`idp.cli.main`, which names the
    database and the cause.
    """
    engine = make_engine(load_settings(config_uri))
    try:
        with Session(engine) as session, session.begin():
            yield session
    except MetadataError as exc:
        raise CommandError(str(exc)) from None
    finally:
        engine.dispose()


def _read_metadata(path: str) -> bytes:
    from idp.units import format_over

    try:
        with open(path, "rb") as file:
            # Never read more than one byte past the cap (OPS-03).
            data = file.read(MAX_METADATA_BYTES + 1)
            if len(data) > MAX_METADATA_BYTES:
                size = os.fstat(file.fileno()).st_size
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_METADATA_BYTES:
        raise CommandError(
            f"{path} is {format_over(max(size, len(data)), MAX_METADATA_BYTES)}"
        )
    return data


def import_(args) -> int:
    data = _read_metadata(args.file)
    with _service(args.config_uri) as sps:
        imported = sps.import_metadata(
            data,
            module_code=args.module,
            disabled=args.disabled,
            replace=args.replace,
            confirm_hosts=args.confirm_host,
            actor=_actor(),
        )
        line = (
            f"{imported.outcome} {imported.sp.entity_id} ({describe_sp(imported.sp)})"
        )
    for change in imported.trust_changes:
        print(f"replaced: {change}")
    print(line)
    return 0


def list_(args) -> int:
    with _transaction(args.config_uri) as session:
        sps = session.scalars(
            select(ServiceProvider)
            .options(
                selectinload(ServiceProvider.module),
                selectinload(ServiceProvider.source),
            )
            .order_by(ServiceProvider.entity_id)
        ).all()
        lines = [
            "\t".join(
                (
                    sp.entity_id,
                    sp.module.code if sp.module else "-",
                    "enabled" if sp.enabled else "disabled",
                    f"{_acs_count(sp)} ACS",
                    _origin(sp),
                )
            )
            for sp in sps
        ]
    for line in lines or ["no SP is registered"]:
        print(line)
    return 0


def _origin(sp: ServiceProvider) -> str:
    """Where the SP came from: its metadata source, or ``sp import``."""
    return f"source {sp.source.name}" if sp.source else "sp import"


def _parsed(sp: ServiceProvider) -> SpMetadata:
    return registry.sp_metadata(sp)


def _acs_count(sp: ServiceProvider) -> str:
    try:
        return str(len(_parsed(sp).assertion_consumer_services))
    except MetadataError:
        # Stored by an older release; 'sp show' names the reason.
        return "unusable"


def show(args) -> int:
    with _transaction(args.config_uri) as session:
        sp = registry.find_sp(session, args.entity_id)
        lines = _describe(sp, _parsed(sp))
    print("\n".join(lines))
    return 0


def _describe(sp: ServiceProvider, md: SpMetadata) -> list[str]:
    def yes(value: bool) -> str:
        return "yes" if value else "no"

    # What is sent: a stored policy the rules override says so.
    sign_response, sign_assertion = registry.signing(sp, md)

    lines = [
        f"entity ID:            {sp.entity_id}",
        f"module:               {sp.module.code if sp.module else '-'}",
        f"enabled:              {yes(sp.enabled)}",
        f"registered by:        {_origin(sp)}",
        f"name:                 {md.display_names.get('ms') or '-'} (ms), "
        f"{md.display_names.get('en') or '-'} (en)",
        f"NameID format:        {sp.name_id_format}",
        f"attributes released:  {', '.join(sp.attributes_released) or '-'}",
        "uid:                  "
        + ("global (the same at every SP)" if sp.global_uid else "for this SP only"),
        "metadata asks for:    "
        + (", ".join(md.requested_attributes) or "-")
        + (f" (subject-id:req {md.subject_id_req})" if md.subject_id_req else "")
        + " (not released unless the policy above names it)",
        f"sign response:        {yes(sign_response)}"
        + ("" if sign_response == bool(sp.sign_response) else " (never unsigned)"),
        f"sign assertion:       {yes(sign_assertion)}"
        + (
            ""
            if sign_assertion == bool(sp.sign_assertion)
            else " (the metadata asks: WantAssertionsSigned)"
        ),
        f"encrypt assertion:    {yes(sp.encrypt_assertion)}",
        "encryption method:    "
        + (sp.encryption_method or "auto (the strongest the metadata lists)"),
        f"allow SHA-1:          {yes(sp.allow_sha1)}",
        f"AuthnContext class:   {sp.required_authn_context or '-'}",
        "clock skew:           "
        + (f"{sp.clock_skew} s" if sp.clock_skew is not None else "IdP default"),
        "RelayState limit:     "
        + (f"{sp.relay_state_max} B" if sp.relay_state_max else "1024 B"),
        f"signed requests:      {yes(md.authn_requests_signed)} (AuthnRequestsSigned)",
        f"signing keys:         {len(md.signing_certificates)}",
        f"encryption keys:      {len(md.encryption_certificates)}"
        + (f" ({', '.join(md.encryption_methods)})" if md.encryption_methods else ""),
        f"metadata SHA-256:     {sp.metadata_sha256}",
        "metadata valid until: "
        + (f"{md.valid_until:%Y-%m-%d %H:%M:%S} UTC" if md.valid_until else "-"),
    ]
    for acs in md.assertion_consumer_services:
        default = " default" if acs.is_default else ""
        lines.append(f"ACS [{acs.index}]{default}: {acs.binding} {acs.location}")
    for slo in md.single_logout_services:
        response = (
            f" (response {slo.response_location})" if slo.response_location else ""
        )
        lines.append(f"SLO: {slo.binding} {slo.location}{response}")
    return lines


def remove(args) -> int:
    confirmed = None
    if not args.yes:
        # Read-only first, and the question asked outside any transaction:
        # a SQLite writer lock held while a person thinks stops every node.
        with _service(args.config_uri) as sps:
            removal = sps.removal(args.entity_id)
        lines = removal.lines
        print(f"This deletes {lines[0]}", *lines[1:], sep="\n  ")
        if not confirmed_answer(f"Remove {args.entity_id}?"):
            raise CommandError("not removed: not confirmed (answer yes, or pass --yes)")
        confirmed = removal
    with _service(args.config_uri) as sps:
        lines = sps.remove(args.entity_id, confirmed=confirmed, actor=_actor())
    print(f"removed {lines[0]}", *lines[1:], sep="\n  ")
    return 0


def enable(args) -> int:
    return _set_enabled(args, True)


def disable(args) -> int:
    return _set_enabled(args, False)


def _set_enabled(args, enabled: bool) -> int:
    word = "enabled" if enabled else "disabled"
    with _service(args.config_uri) as sps:
        changed = sps.set_enabled(args.entity_id, enabled, actor=_actor())
    print(f"{word} {args.entity_id}" if changed else f"unchanged: already {word}")
    return 0


def _expiring(
    what: str, moment: dt.datetime | None, now: dt.datetime, horizon: dt.datetime
) -> str | None:
    if moment is None or moment > horizon:
        return None
    if moment <= now:
        return f"{what} expired at {moment:%Y-%m-%d %H:%M} UTC"
    days = (moment - now).days
    return f"{what} expires at {moment:%Y-%m-%d %H:%M} UTC (in {days} days)"


def _certificate_lines(md: SpMetadata, now, horizon) -> list[str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    lines = []
    for use, pems in (
        ("signing", md.signing_certificates),
        ("encryption", md.encryption_certificates),
    ):
        for pem in pems:
            certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
            digest = certificate.fingerprint(hashes.SHA256()).hex(":")[:23]
            line = _expiring(
                f"{use} certificate SHA-256 {digest}...",
                certificate.not_valid_after_utc,
                now,
                horizon,
            )
            if line:
                lines.append(line)
    return lines


def check_(args) -> int:
    """Exit 1 when anything expires within ``--days``: SP certificates, SP
    metadata (validUntil) and metadata sources' documents."""
    from idp.models import MetadataSource

    if not 0 <= args.days <= 36500:
        raise CommandError("--days must be 0 to 36500")
    now = dt.datetime.now(dt.UTC)
    horizon = now + dt.timedelta(days=args.days)
    lines = []
    with _transaction(args.config_uri) as session:
        documents = {}
        for source in session.scalars(
            select(MetadataSource).order_by(MetadataSource.name)
        ):
            documents[source.id] = source.valid_until
            line = _expiring("document", source.valid_until, now, horizon)
            if line:
                lines.append(f"source {source.name}: {line}")
        for sp in session.scalars(
            select(ServiceProvider).order_by(ServiceProvider.entity_id)
        ):
            try:
                md = _parsed(sp)
            except MetadataError as exc:
                lines.append(f"{sp.entity_id}: stored metadata is unusable: {exc}")
                continue
            found = []
            # An SP from a source inherits the document's validUntil, which
            # its source's line reports once; only an earlier one of its own
            # is news.
            document = documents.get(sp.source_id)
            inherited = (
                document is not None
                and md.valid_until is not None
                and md.valid_until >= document
            )
            line = _expiring("metadata", md.valid_until, now, horizon)
            if line and not inherited:
                found.append(line)
            found.extend(_certificate_lines(md, now, horizon))
            lines.extend(f"{sp.entity_id}: {line}" for line in found)
    if not lines:
        print(f"nothing expires within {args.days} days")
        return 0
    print("\n".join(lines))
    return 1
