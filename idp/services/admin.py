"""Who administers idMe: the admin console's roles, and the rules of its gate.

An admin role (:class:`idp.models.AdminRole`) is held as an
:class:`idp.models.AdminGrant` row, granted and revoked here only, each
change audited with its :class:`Actor`. The command line
(``idp-admin admin grant``) makes the first superadmin; after that a
superadmin may grant from the console too.

A role takes effect only in a session that passed the second factor
(:func:`second_factor_passed`, the one place that says what that means),
and a state-changing act needs a sign-in or re-authentication younger than
:data:`REAUTH_WINDOW` (:func:`fresh`). :mod:`idp.authz` turns both into
the console's ACL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from zope.interface import implementer

from idp.db import utcnow
from idp.models import AdminGrant, AdminRole, User
from idp.services import mail
from idp.services.actor import COMMAND_LINE, Actor
from idp.services.errors import Conflict, Invalid, atomic
from idp.services.interfaces import IAdminRoles, IAuditLog, IOutbox
from idp.services.signin import AUTHN_METHOD_TWO_STEP

#: How old a sign-in (or re-authentication) may be for an admin to change anything.
REAUTH_WINDOW = dt.timedelta(minutes=15)
#: The session key of the last re-authentication: ``{"user": id, "at": iso}``.
REAUTH_KEY = "_admin_reauth"


def second_factor_passed(authn_method: str | None) -> bool:
    """True if a session signed in with ``authn_method`` passed the second factor.

    The sign-in's code step (and the console's own, ``admin.verify``) record
    :data:`AUTHN_METHOD_TWO_STEP`; a password-only sign-in does not count,
    even for a user who turned two-step verification on since.
    """
    return authn_method == AUTHN_METHOD_TWO_STEP


def fresh(
    user_id: uuid.UUID,
    authn_at: dt.datetime | None,
    data: Mapping[str, Any],
    now: dt.datetime,
) -> bool:
    """True if ``user_id`` signed in, or re-authenticated, within the window.

    ``data`` is the session's: a re-authentication is recorded there by
    :func:`mark_reauthenticated` (at the request clock's time, which tests
    freeze), bound to the user so another person's can never count.
    """
    moments = [authn_at] if authn_at is not None else []
    mark = data.get(REAUTH_KEY)
    if isinstance(mark, dict) and mark.get("user") == str(user_id):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            moments.append(dt.datetime.fromisoformat(mark["at"]))
    # A moment slightly ahead (another node's clock) counts as fresh.
    return any(now - at < REAUTH_WINDOW for at in moments)


def mark_reauthenticated(session, user_id: uuid.UUID, now: dt.datetime) -> None:
    """Record in ``session`` that ``user_id`` gave their password again at ``now``."""
    session[REAUTH_KEY] = {"user": str(user_id), "at": now.isoformat()}


def check_target(dbsession, user: User) -> None:
    """Refuse a console act on an account holding an admin role.

    Correcting an admin's email and then sending a password reset would
    hand that admin's password to whoever chose the address: the helpdesk
    could climb to superadmin. Such accounts are changed with
    ``idp-admin`` on the server. :class:`Conflict` ``admin.target_is_admin``.
    """
    if roles_of(dbsession, user.id):
        raise Conflict(
            "admin.target_is_admin",
            "this account holds an admin role: change it with idp-admin",
        )


def parse_role(text: str) -> AdminRole:
    """``text`` as an admin role, whatever its case; :class:`Invalid` if none."""
    try:
        return AdminRole(text.strip().lower())
    except ValueError:
        names = ", ".join(role.value for role in AdminRole)
        raise Invalid(
            "admin.role_unknown",
            f"{text!r} is not an admin role (one of {names})",
            field="role",
            roles=names,
        ) from None


def roles_of(dbsession, user_id: uuid.UUID) -> frozenset[AdminRole]:
    """The admin roles ``user_id`` holds (whether or not they take effect yet)."""
    return frozenset(
        AdminRole(role)
        for role in dbsession.scalars(
            select(AdminGrant.role).where(AdminGrant.user_id == user_id)
        )
    )


@implementer(IAdminRoles)
class AdminRoles:
    def __init__(self, dbsession, *, audit, outbox, clock=utcnow) -> None:
        self.dbsession = dbsession
        self.audit = audit
        self.outbox = outbox
        self.clock = clock

    @classmethod
    def create_service(cls, context, request) -> AdminRoles:
        return cls(
            request.dbsession,
            audit=request.service(IAuditLog),
            outbox=request.service(IOutbox),
        )

    def roles_of(self, user: User) -> frozenset[AdminRole]:
        return roles_of(self.dbsession, user.id)

    def holders(self) -> list[tuple[User, list[AdminRole]]]:
        """Every user holding an admin role, with their roles, by identity number."""
        rows = self.dbsession.execute(
            select(User, AdminGrant.role)
            .join(AdminGrant, AdminGrant.user_id == User.id)
            .order_by(User.identifier, AdminGrant.role)
        ).all()
        held: dict[uuid.UUID, tuple[User, list[AdminRole]]] = {}
        for user, role in rows:
            held.setdefault(user.id, (user, []))[1].append(AdminRole(role))
        return list(held.values())

    @staticmethod
    def holders_query():
        """Every user holding an admin role, as a ``SELECT`` to page and sort."""
        return select(User).where(User.id.in_(select(AdminGrant.user_id)))

    def roles_by_user(self, user_ids) -> dict[uuid.UUID, list[AdminRole]]:
        """The admin roles of each of ``user_ids`` (one query, for a page)."""
        held: dict[uuid.UUID, list[AdminRole]] = {}
        for user_id, role in self.dbsession.execute(
            select(AdminGrant.user_id, AdminGrant.role)
            .where(AdminGrant.user_id.in_(list(user_ids)))
            .order_by(AdminGrant.role)
        ):
            held.setdefault(user_id, []).append(AdminRole(role))
        return held

    def grant(self, user: User, role: AdminRole | str, *, actor: Actor) -> bool:
        """Give ``user`` the admin role (``admin.granted``); False if they hold it."""
        role = role if isinstance(role, AdminRole) else parse_role(role)
        with atomic(self.dbsession):
            if role in self.roles_of(user):
                return False
            try:
                # Two grants racing: the primary key lets one through.
                with self.dbsession.begin_nested():
                    self.dbsession.add(
                        AdminGrant(
                            user_id=user.id,
                            role=role.value,
                            granted_at=self.clock(),
                            granted_by=actor.user_id,
                        )
                    )
            except IntegrityError:
                return False
            actor.record(
                self.audit, "admin.granted", subject_user_id=user.id, role=role.value
            )
            # The owner hears of it: a role granted to a hijacked account, or
            # by a hijacked superadmin, does not go unnoticed.
            mail.admin_role_changed(
                self.outbox, user, role=role.value, granted=True, at=self.clock()
            )
        return True

    def revoke(self, user: User, role: AdminRole | str, *, actor: Actor) -> bool:
        """Take the admin role from ``user`` (``admin.revoked``); False if not held.

        The console may not take the last superadmin's role (nobody could
        grant one again but the operator's shell): :class:`Conflict`
        ``admin.last_superadmin``. The command line may.
        """
        role = role if isinstance(role, AdminRole) else parse_role(role)
        with atomic(self.dbsession):
            if role not in self.roles_of(user):
                return False
            if role is AdminRole.SUPERADMIN and actor.by != COMMAND_LINE:
                others = self.dbsession.scalar(
                    select(func.count())
                    .select_from(AdminGrant)
                    .where(
                        AdminGrant.role == AdminRole.SUPERADMIN.value,
                        AdminGrant.user_id != user.id,
                    )
                )
                if not others:
                    raise Conflict(
                        "admin.last_superadmin",
                        "the last superadmin's role can only be revoked with idp-admin",
                        field="role",
                    )
            self.dbsession.execute(
                delete(AdminGrant).where(
                    AdminGrant.user_id == user.id, AdminGrant.role == role.value
                )
            )
            actor.record(
                self.audit, "admin.revoked", subject_user_id=user.id, role=role.value
            )
            mail.admin_role_changed(
                self.outbox, user, role=role.value, granted=False, at=self.clock()
            )
        return True


def includeme(config) -> None:
    config.register_service_factory(AdminRoles.create_service, IAdminRoles)
