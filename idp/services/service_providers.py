"""Registering service providers, and their policy, as administrators do.

The SAML side (parsing and checking metadata, the trust-change and
host-claim rules, the registry generation every node rebuilds on) is
:mod:`idp.saml.registry`'s; this service is the one callable per operation
that ``idp-admin sp`` and the admin console both use: the operation, its
audit event with the :class:`Actor`, and its refusals as
:mod:`idp.services.errors`. Each runs in a SAVEPOINT, so a refusal raised
half-way (a policy checked one option after another, a re-import refused
for a host claim after its options were applied) leaves nothing behind,
whatever the caller does next.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from zope.interface import implementer

from idp.models import ServiceProvider
from idp.services.actor import Actor
from idp.services.errors import Conflict, Invalid, NotFound, atomic
from idp.services.interfaces import IAuditLog, IServiceProviders


@dataclass(frozen=True)
class Imported:
    """What an import did: ``outcome`` is registered, updated or unchanged."""

    sp: ServiceProvider
    outcome: str
    # What a replacement changed in what the IdP trusts (SAML-30), if any.
    trust_changes: list[str]


@dataclass(frozen=True)
class Preview:
    """What importing metadata would do, worked out and rolled back.

    ``outcome`` is registered, updated or unchanged; ``diff`` the unified
    diff of the stored metadata against the new (every line added for a
    new SP), cut at :data:`PREVIEW_DIFF_LINES`.
    """

    entity_id: str
    outcome: str
    trust_changes: list[str]
    diff: list[str]
    truncated: bool
    sha256: str


PREVIEW_DIFF_LINES = 400


@dataclass(frozen=True)
class Removal:
    """What removing an SP deletes with it, one line each, counted now.

    ``registration`` tells this registration of the entity from a later
    one: its row id with its creation time, since SQLite gives a new row
    the id of a deleted one that was the highest.
    """

    registration: tuple[int, dt.datetime]
    lines: list[str]


def describe_sp(sp: ServiceProvider) -> str:
    """``module CODE, enabled``: where an SP stands, in a few words."""
    return (
        f"module {sp.module.code if sp.module else '-'}, "
        f"{'enabled' if sp.enabled else 'disabled'}"
    )


@contextmanager
def _metadata_refusals() -> Iterator[None]:
    """The SAML registry's ``MetadataError`` as a service refusal."""
    from idp.saml.registry import (
        HostClaimed,
        ReplaceRefused,
        SignedAssertionsWanted,
        UnsignedPolicy,
    )
    from idp.saml.sp_metadata import MetadataError

    try:
        yield
    except UnsignedPolicy as exc:
        raise Invalid("sp.policy_unsigned", str(exc)) from None
    except SignedAssertionsWanted as exc:
        raise Invalid("sp.policy_assertions_wanted", str(exc)) from None
    except ReplaceRefused as exc:
        raise Conflict("sp.trust_changed", str(exc), changes=exc.changes) from None
    except HostClaimed as exc:
        raise Conflict("sp.host_claimed", str(exc), claims=exc.claims) from None
    except MetadataError as exc:
        raise Invalid("sp.refused", str(exc)) from None


@implementer(IServiceProviders)
class ServiceProviders:
    def __init__(
        self,
        dbsession,
        audit,
        *,
        allow_http: bool,
        max_valid_until: dt.timedelta = dt.timedelta(days=28),
    ) -> None:
        self.dbsession = dbsession
        self.audit = audit
        # Development only: plain http endpoints on this machine.
        self.allow_http = allow_http
        # How far out a source document's validUntil may be (settings).
        self.max_valid_until = max_valid_until

    @classmethod
    def create_service(cls, context, request) -> ServiceProviders:
        settings = request.registry.settings
        return cls(
            request.dbsession,
            request.service(IAuditLog),
            allow_http=settings["idp.development"],
            max_valid_until=dt.timedelta(
                days=settings["idp.metadata_max_validity_days"]
            ),
        )

    def approve_change(
        self, source_name: str, entity_id: str, *, actor: Actor
    ) -> list[str]:
        """Apply the trust change a source holds for ``entity_id``, as
        ``idp-admin source approve`` does (SAML-30): checked again now, each
        applied change audited (``sp.metadata_changed``, ``approved``), and
        the approval itself with the actor (``source.change_approved``).

        :class:`NotFound` for an unknown source; :class:`Conflict`
        (``source.approve_refused``) naming what stands in the way.
        """
        from idp.models import MetadataSource
        from idp.saml import sources

        with atomic(self.dbsession):
            source = self.dbsession.scalar(
                select(MetadataSource).where(MetadataSource.name == source_name)
            )
            if source is None:
                raise NotFound("source.not_found", f"no source named {source_name!r}")
            try:
                approved = sources.approve(
                    self.dbsession,
                    source,
                    entity_id,
                    now=dt.datetime.now(dt.UTC),
                    max_valid_until=self.max_valid_until,
                    by=actor.by,
                )
            except sources.SourceError as exc:
                raise Conflict("source.approve_refused", str(exc)) from None
            actor.record(
                self.audit,
                "source.change_approved",
                source=source.name,
                entity_ids=approved,
            )
        return approved

    def find(self, entity_id: str) -> ServiceProvider:
        """The SP registered with exactly ``entity_id``, or :class:`NotFound`."""
        sp = self.dbsession.scalar(
            select(ServiceProvider).where(ServiceProvider.entity_id == entity_id)
        )
        if sp is None:
            raise NotFound("sp.not_found", f"no SP is registered as {entity_id!r}")
        return sp

    def import_metadata(
        self,
        data: bytes,
        *,
        module_code: str | None = None,
        disabled: bool = False,
        replace: bool = False,
        confirm_hosts: Collection[str] = (),
        actor: Actor,
    ) -> Imported:
        """Register an SP from its metadata, or refresh a registered one.

        The rules are :func:`idp.saml.registry.import_sp`'s (SAML-29 host
        claims, SAML-30 trust changes only with ``replace``, an SP a source
        brought refused). An import that would leave the SP exactly as it is
        (the same bytes, module and enabled state) writes and audits
        nothing; otherwise ``sp.imported``, ``sp.updated`` or ``sp.replaced``.
        """
        from idp.saml import registry
        from idp.saml.sp_metadata import parse_sp_metadata

        hosts = sorted({host.strip().lower() for host in confirm_hosts})
        with atomic(self.dbsession), _metadata_refusals():
            # Checked in full (expiry, endpoints...) even when nothing changes.
            entity_id = parse_sp_metadata(data, allow_http=self.allow_http).entity_id
            existing = self.dbsession.scalar(
                select(ServiceProvider).where(ServiceProvider.entity_id == entity_id)
            )
            if _unchanged(existing, data, module_code, disabled):
                return Imported(existing, "unchanged", [])
            previous = existing.metadata_sha256 if existing is not None else None
            sp = registry.import_sp(
                self.dbsession,
                data,
                module_code=module_code,
                enabled=False if disabled else None,
                replace=replace,
                allow_http=self.allow_http,
                confirm_hosts=tuple(hosts),
            )
            detail: dict[str, Any] = {
                "entity_id": sp.entity_id,
                "module": sp.module.code if sp.module else None,
                "enabled": sp.enabled,
                "metadata_sha256": sp.metadata_sha256,
            }
            if hosts:
                # SAML-29: the administrator vouched for a host another SP uses.
                detail["confirmed_hosts"] = hosts
            changes = list(sp.trust_changes)
            if changes:
                actor.record(self.audit, "sp.replaced", changes=changes, **detail)
            elif previous is None:
                actor.record(self.audit, "sp.imported", **detail)
            else:
                actor.record(
                    self.audit, "sp.updated", previous_sha256=previous, **detail
                )
        return Imported(sp, "registered" if previous is None else "updated", changes)

    def preview_import(
        self,
        data: bytes,
        *,
        module_code: str | None = None,
        disabled: bool = False,
        replace: bool = False,
        confirm_hosts: Collection[str] = (),
        actor: Actor,
    ) -> Preview:
        """What :meth:`import_metadata` would do with the same arguments.

        It runs the import itself, every rule and refusal included, in a
        SAVEPOINT that is then rolled back: the preview can never disagree
        with what applying does, and nothing of it is written or audited.
        Raises what the import would raise.
        """
        import difflib

        from idp.saml.sp_metadata import parse_sp_metadata

        with _metadata_refusals():
            entity_id = parse_sp_metadata(data, allow_http=self.allow_http).entity_id
        existing = self.dbsession.scalar(
            select(ServiceProvider).where(ServiceProvider.entity_id == entity_id)
        )
        old = existing.metadata_xml if existing is not None else ""
        trial = self.dbsession.begin_nested()
        try:
            imported = self.import_metadata(
                data,
                module_code=module_code,
                disabled=disabled,
                replace=replace,
                confirm_hosts=confirm_hosts,
                actor=actor,
            )
            outcome, changes = imported.outcome, list(imported.trust_changes)
        finally:
            trial.rollback()
        new = data.decode("utf-8", errors="replace")
        lines = [
            line.rstrip("\n")
            for line in difflib.unified_diff(
                old.splitlines(keepends=True),
                new.splitlines(keepends=True),
                "registered",
                "uploaded",
                n=2,
            )
        ]
        return Preview(
            entity_id=entity_id,
            outcome=outcome,
            trust_changes=changes,
            diff=lines[:PREVIEW_DIFF_LINES],
            truncated=len(lines) > PREVIEW_DIFF_LINES,
            sha256=hashlib.sha256(data).hexdigest(),
        )

    def set_policy(
        self, entity_id: str, changes: dict[str, Any], *, actor: Actor
    ) -> ServiceProvider:
        """Change what an SP receives and how (``sp.policy``); only the keys
        of ``changes`` change (see :func:`idp.saml.registry.set_policy`)."""
        from idp.saml import registry

        if not changes:
            raise Invalid("sp.policy_empty", "nothing to change")
        with atomic(self.dbsession), _metadata_refusals():
            sp = self.find(entity_id)
            registry.set_policy(self.dbsession, sp.entity_id, **changes)
            actor.record(
                self.audit,
                "sp.policy",
                entity_id=sp.entity_id,
                changes=changes,
            )
        return sp

    def set_enabled(self, entity_id: str, enabled: bool, *, actor: Actor) -> bool:
        """Enable or disable an SP (``sp.enabled``, ``sp.disabled``); False,
        with nothing audited, when it already was."""
        from idp.saml import registry

        with atomic(self.dbsession):
            sp = self.find(entity_id)
            if sp.enabled == enabled:
                return False
            registry.set_enabled(self.dbsession, sp.entity_id, enabled)
            event = "sp.enabled" if enabled else "sp.disabled"
            actor.record(self.audit, event, entity_id=sp.entity_id)
        return True

    def removal(self, entity_id: str) -> Removal:
        """What removing the SP would delete, for the administrator to confirm."""
        from idp.models import PendingSamlRequest, PersistentNameId
        from idp.models.session import SessionParticipant

        sp = self.find(entity_id)

        def count(model) -> int:
            return self.dbsession.scalar(
                select(func.count()).select_from(model).where(model.sp_id == sp.id)
            )

        lines = [
            f"the registration of {sp.entity_id} ({describe_sp(sp)}) and its policy"
        ]
        name_ids = count(PersistentNameId)
        if name_ids:
            lines.append(
                f"{name_ids} persistent NameID{'s' if name_ids > 1 else ''}: "
                "registered again, the service would get new ones and not "
                "recognise its users"
            )
        participants = count(SessionParticipant)
        if participants:
            lines.append(
                f"{participants} sign-in{'s' if participants > 1 else ''} in live "
                "sessions (single logout will no longer reach the service)"
            )
        pending = count(PendingSamlRequest)
        if pending:
            lines.append(
                f"{pending} sign-in request{'s' if pending > 1 else ''} waiting "
                "for the user"
            )
        return Removal((sp.id, sp.created_at), lines)

    def remove(
        self, entity_id: str, *, confirmed: Removal | None = None, actor: Actor
    ) -> list[str]:
        """Unregister an SP and what goes with it (``sp.removed``, listing it).

        ``confirmed`` is the :meth:`removal` an administrator confirmed: an
        SP removed and registered again meanwhile is another one, refused
        (:class:`Conflict`).
        """
        from idp.saml import registry

        with atomic(self.dbsession):
            removal = self.removal(entity_id)
            if confirmed is not None and removal.registration != confirmed.registration:
                raise Conflict(
                    "sp.registered_again",
                    f"not removed: {entity_id} was registered again meanwhile",
                )
            registry.remove_sp(self.dbsession, entity_id)
            actor.record(
                self.audit, "sp.removed", entity_id=entity_id, deleted=removal.lines
            )
        return removal.lines


def _unchanged(
    sp: ServiceProvider | None, data: bytes, module_code: str | None, disabled: bool
) -> bool:
    """Whether importing ``data`` would leave the registered ``sp`` as it is.

    The same bytes, no other module and no other enabled state: nothing to
    write, nothing to audit, no generation for every node to rebuild on.
    """
    if sp is None or sp.metadata_sha256 != hashlib.sha256(data).hexdigest():
        return False
    if module_code is not None and (
        sp.module is None or sp.module.code.lower() != module_code.lower()
    ):
        return False
    return not (disabled and sp.enabled)


def includeme(config) -> None:
    config.register_service_factory(ServiceProviders.create_service, IServiceProviders)
