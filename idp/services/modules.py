"""Modules and roles: the registry of what users reach, and by which role.

A module is a MOEIS system users reach by role; a role grants one or more
modules. Codes and names are unique whatever their case, which the
database enforces (migration 0007, the unique indexes on ``lower(code)``
and ``lower(name)``), and are found whatever their case. The operator's
command line (``idp-admin module|role``) and the admin console both call
:class:`ModuleRegistry`; every change is audited with its :class:`Actor`,
and a refused change writes nothing (:func:`atomic`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from zope.interface import implementer

from idp.forms import collapse_spaces, has_control_characters
from idp.models import Module, Role, ServiceProvider
from idp.models.role import user_roles
from idp.services.actor import Actor
from idp.services.errors import Conflict, Invalid, NotFound, atomic
from idp.services.interfaces import IAuditLog, IModuleRegistry

#: Module codes and role names: what SPs and SAML attributes carry.
CODE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CODE_RULE = (
    "use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
)
LABEL_MAX = 200
DESCRIPTION_MAX = 2000


def check_code(field: str, value: str) -> str:
    """``value`` if it is a valid module code or role name; else :class:`Invalid`."""
    if not CODE_PATTERN.fullmatch(value):
        raise Invalid("code.invalid", f"{value!r}: {CODE_RULE}", field=field)
    return value


def clean_label(field: str, value: str | None, *, required: bool = True) -> str | None:
    """A display name or a reason: spaces collapsed, one line, 200 characters.

    None for an empty optional one; :class:`Invalid` naming ``field`` else.
    """
    if value is None or not value.strip():
        if required:
            raise Invalid("text.empty", "must not be empty", field=field)
        return None
    if has_control_characters(value):
        raise Invalid(
            "text.control_characters",
            "remove the line breaks and control characters",
            field=field,
        )
    text = collapse_spaces(value)
    if len(text) > LABEL_MAX:
        raise Invalid(
            "text.too_long",
            f"at most {LABEL_MAX} characters",
            field=field,
            max=LABEL_MAX,
        )
    return text


def clean_description(value: str | None) -> str:
    """A role's description: several lines allowed, 2000 characters."""
    text = value or ""
    if has_control_characters(text.replace("\n", " ")):
        raise Invalid(
            "text.control_characters",
            "remove the control characters",
            field="description",
        )
    if len(text) > DESCRIPTION_MAX:
        raise Invalid(
            "text.too_long",
            f"at most {DESCRIPTION_MAX} characters",
            field="description",
            max=DESCRIPTION_MAX,
        )
    return text.strip()


@dataclass(frozen=True)
class _Kind:
    """What tells the module and role operations apart; the rest is shared."""

    model: Any
    key: str  # the column users type: Module.code, Role.name
    noun: str
    taken: str  # "a module with code 'x' already exists"
    missing: str

    def column(self):
        return getattr(self.model, self.key)


MODULE = _Kind(Module, "code", "module", "a module with code", "no module with code")
ROLE = _Kind(Role, "name", "role", "a role named", "no role named")


@dataclass(frozen=True)
class Deleted:
    """What a deletion removed, for the front end to say."""

    key: str
    names: str  # "Malay name / English name"
    modules: list[str]  # the modules a deleted role granted (they remain)


def names(row) -> str:
    """A module's or role's display names: ``Malay / English``."""
    return f"{row.display_name_ms} / {row.display_name_en}"


@implementer(IModuleRegistry)
class ModuleRegistry:
    def __init__(self, dbsession, audit) -> None:
        self.dbsession = dbsession
        self.audit = audit

    @classmethod
    def create_service(cls, context, request) -> ModuleRegistry:
        return cls(request.dbsession, request.service(IAuditLog))

    # Reading

    def modules(self) -> list[Module]:
        return list(self.dbsession.scalars(select(Module).order_by(Module.code)))

    def roles(self) -> list[Role]:
        return list(self.dbsession.scalars(select(Role).order_by(Role.name)))

    def find_module(self, code: str) -> Module:
        return self._find(MODULE, code)

    def find_role(self, name: str) -> Role:
        return self._find(ROLE, name)

    def _find(self, kind: _Kind, key: str):
        row = self.dbsession.scalars(
            select(kind.model).where(func.lower(kind.column()) == key.lower())
        ).one_or_none()
        if row is None:
            raise NotFound(f"{kind.noun}.not_found", f"{kind.missing} {key!r}", key=key)
        return row

    # Creating, renaming, deleting

    def create_module(
        self, code: str, *, name_ms: str, name_en: str, actor: Actor
    ) -> Module:
        """Add a module; :class:`Conflict` if the code is taken in any case."""
        check_code("code", code)
        return self._create(
            MODULE, Module(code=code, **_labels(name_ms, name_en)), actor
        )

    def create_role(
        self,
        name: str,
        *,
        name_ms: str,
        name_en: str,
        description: str | None = None,
        actor: Actor,
    ) -> Role:
        """Add a role; :class:`Conflict` if the name is taken in any case."""
        check_code("name", name)
        labels = _labels(name_ms, name_en)
        role = Role(name=name, description=clean_description(description), **labels)
        return self._create(ROLE, role, actor)

    def rename_module(self, code: str, new: str, *, actor: Actor) -> str:
        """Change a module's code; return the old one."""
        return self._rename(MODULE, code, new, actor)

    def rename_role(self, name: str, new: str, *, actor: Actor) -> str:
        """Change a role's name; return the old one.

        ``isMemberOf`` carries role names: services matching on the old one
        must be told before their users lose access there.
        """
        return self._rename(ROLE, name, new, actor)

    def delete_module(self, code: str, *, actor: Actor) -> Deleted:
        """Remove a module; :class:`Conflict` (``module.in_use``) while a role
        grants it or an SP belongs to it, naming them."""
        with atomic(self.dbsession):
            module = locked(self.dbsession, self.find_module(code))
            roles = sorted(role.name for role in module.roles)
            sps = list(
                self.dbsession.scalars(
                    select(ServiceProvider.entity_id)
                    .where(ServiceProvider.module_id == module.id)
                    .order_by(ServiceProvider.entity_id)
                )
            )
            uses = module_uses(roles, sps)
            if uses:
                raise Conflict(
                    "module.in_use",
                    f"module {module.code} is in use: {'; '.join(uses.values())}",
                    module=module.code,
                    uses=uses,
                )
            deleted = Deleted(module.code, names(module), [])
            self._delete(module)
            actor.record(self.audit, "module.deleted", code=deleted.key)
        return deleted

    def delete_role(self, name: str, *, actor: Actor) -> Deleted:
        """Remove a role; :class:`Conflict` (``role.in_use``) while a user holds it.

        The modules it granted remain.
        """
        with atomic(self.dbsession):
            role = locked(self.dbsession, self.find_role(name))
            holders = self.dbsession.scalar(
                select(func.count())
                .select_from(user_roles)
                .where(user_roles.c.role_id == role.id)
            )
            if holders:
                raise Conflict(
                    "role.in_use",
                    f"role {role.name} is in use: {holders} "
                    f"user{'s hold' if holders > 1 else ' holds'} it",
                    role=role.name,
                    holders=holders,
                )
            modules = sorted(module.code for module in role.modules)
            deleted = Deleted(role.name, names(role), modules)
            self._delete(role)
            actor.record(self.audit, "role.deleted", name=deleted.key, modules=modules)
        return deleted

    # Which role grants which module

    def grant_module(self, role_name: str, code: str, *, actor: Actor) -> bool:
        """Let a role reach a module; False (nothing audited) if it already does."""
        return self._set_grant(role_name, code, True, actor)

    def revoke_module(self, role_name: str, code: str, *, actor: Actor) -> bool:
        """Stop a role reaching a module; False (nothing audited) if it did not."""
        return self._set_grant(role_name, code, False, actor)

    def _set_grant(self, role_name: str, code: str, grant: bool, actor: Actor) -> bool:
        with atomic(self.dbsession):
            role = self.find_role(role_name)
            module = self.find_module(code)
            if not set_membership(role.modules, module, grant):
                return False
            self.dbsession.flush()
            event = "role.module_granted" if grant else "role.module_revoked"
            actor.record(self.audit, event, role=role.name, module=module.code)
        return True

    # The shared steps

    def _taken(self, kind: _Kind, key: str, *, but=None) -> None:
        """:class:`Conflict` if another row has ``key`` in any case.

        The SELECT gives the friendly message (which spelling is there); the
        unique index is what holds when two changes race (:meth:`_unique`).
        """
        query = select(kind.column()).where(func.lower(kind.column()) == key.lower())
        if but is not None:
            query = query.where(kind.model.id != but.id)
        existing = self.dbsession.scalars(query).first()
        if existing is not None:
            raise _taken(kind, key, existing)

    def _unique(self, kind: _Kind, key: str, change) -> None:
        """Apply ``change`` and flush in a SAVEPOINT; a unique violation is
        the :class:`Conflict` of a race lost to another transaction."""
        try:
            with self.dbsession.begin_nested():
                change()
                self.dbsession.flush()
        except IntegrityError:
            raise _taken(kind, key) from None

    def _create(self, kind: _Kind, row, actor: Actor):
        """Insert ``row`` unless its key is taken in any case; audit it."""
        key = getattr(row, kind.key)
        with atomic(self.dbsession):
            self._taken(kind, key)
            self._unique(kind, key, lambda: self.dbsession.add(row))
            actor.record(
                self.audit,
                f"{kind.noun}.created",
                **{kind.key: key},
                name_ms=row.display_name_ms,
                name_en=row.display_name_en,
            )
        return row

    def _rename(self, kind: _Kind, key: str, new: str, actor: Actor) -> str:
        check_code("new", new)
        with atomic(self.dbsession):
            row = self._find(kind, key)
            old = getattr(row, kind.key)
            if old == new:
                raise Conflict(
                    f"{kind.noun}.same_name",
                    f"{kind.noun} {old} is already called {new}",
                    key=old,
                )
            self._taken(kind, new, but=row)
            self._unique(kind, new, lambda: setattr(row, kind.key, new))
            actor.record(self.audit, f"{kind.noun}.renamed", old=old, new=new)
        return old

    def _delete(self, row) -> None:
        self.dbsession.delete(row)
        self.dbsession.flush()


def locked(dbsession, row):
    """``row`` again, locked until commit, so no grant can slip in meanwhile.

    A grant's insert must lock the row it references (PostgreSQL's KEY
    SHARE against this FOR UPDATE); SQLite already runs one writer at a
    time. So a grant made while a delete checks is either seen by the check
    or refused by the foreign key afterwards, never silently cascaded away.
    """
    return dbsession.scalars(
        select(type(row))
        .where(type(row).id == row.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def set_membership(collection, item, present: bool) -> bool:
    """Put ``item`` in ``collection`` or take it out; False if it already was so."""
    if (item in collection) == present:
        return False
    if present:
        collection.append(item)
    else:
        collection.remove(item)
    return True


def _labels(name_ms: str, name_en: str) -> dict[str, str | None]:
    return {
        "display_name_ms": clean_label("name_ms", name_ms),
        "display_name_en": clean_label("name_en", name_en),
    }


def _taken(kind: _Kind, key: str, existing: str | None = None) -> Conflict:
    if existing is None or existing == key:
        message = f"{kind.taken} {key!r} already exists"
    else:
        message = (
            f"{kind.taken} {existing!r} already exists ({key!r} differs only in case)"
        )
    return Conflict(f"{kind.noun}.taken", message, key=key, existing=existing or key)


def module_uses(roles: list[str], sps: list[str]) -> dict[str, str]:
    """What keeps a module from being deleted: ``roles`` granting it and
    ``sps`` belonging to it, one phrase each (keyed ``roles``,
    ``service_providers``); empty when nothing does."""
    uses = {}
    if roles:
        uses["roles"] = (
            f"granted by role{'s' if len(roles) > 1 else ''} {', '.join(roles)}"
        )
    if sps:
        uses["service_providers"] = (
            f"{len(sps)} SP{'s' if len(sps) > 1 else ''} belong to it: "
            + ", ".join(sps)
        )
    return uses


def includeme(config) -> None:
    config.register_service_factory(ModuleRegistry.create_service, IModuleRegistry)
