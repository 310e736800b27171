"""Permissions, and the root object whose ACL grants them.

Pages that anyone may open (home, help, registration, sign-in) need no
permission. Signed-in pages need ``account``. A user who must still choose a
new password holds only ``change-password``: nothing else, single sign-on
included, is reachable until the new password is set.
"""

import enum

from pyramid.authorization import DENY_ALL, Allow, Authenticated

from idp.models import AdminRole
from idp.services import admin as admin_rules
from idp.services.two_factor import clock_of, has_second_factor


class Permission(enum.StrEnum):
    ACCOUNT = "account"
    CHANGE_PASSWORD = "change-password"  # noqa: S105 (a permission name)
    # The admin console (/admin): each page needs one of these (see ADMIN_ACL).
    ADMIN = "admin"  # the console's home and dashboard
    USERS_READ = "admin.users.read"
    USERS_ACT = "admin.users.act"
    REGISTRY_READ = "admin.registry.read"
    REGISTRY_ACT = "admin.registry.act"
    AUDIT_READ = "admin.audit.read"
    AUDIT_EXPORT = "admin.audit.export"  # the CSV of the whole filtered log
    OUTBOX_READ = "admin.outbox.read"
    OUTBOX_ACT = "admin.outbox.act"  # bring a failing message forward
    GRANTS_READ = "admin.grants.read"
    GRANTS_ACT = "admin.grants.act"


#: Acts that change something: they also need a fresh sign-in (REAUTH_WINDOW).
ADMIN_ACTS = frozenset(
    {
        Permission.USERS_ACT,
        Permission.REGISTRY_ACT,
        Permission.GRANTS_ACT,
        Permission.OUTBOX_ACT,
    }
)
#: What each admin role may do. The auditor reads everything and changes
#: nothing; the superadmin only grants and revokes admin roles (to do
#: another role's work they grant it to themselves, which is audited).
ADMIN_PERMISSIONS: dict[AdminRole, frozenset[Permission]] = {
    AdminRole.HELPDESK: frozenset(
        {Permission.ADMIN, Permission.USERS_READ, Permission.USERS_ACT}
    ),
    AdminRole.REGISTRY: frozenset(
        {
            Permission.ADMIN,
            Permission.REGISTRY_READ,
            Permission.REGISTRY_ACT,
            Permission.OUTBOX_READ,
            Permission.OUTBOX_ACT,
        }
    ),
    AdminRole.AUDITOR: frozenset(
        {
            Permission.ADMIN,
            Permission.USERS_READ,
            Permission.REGISTRY_READ,
            Permission.AUDIT_READ,
            Permission.AUDIT_EXPORT,
            Permission.OUTBOX_READ,
            Permission.GRANTS_READ,
        }
    ),
    # The superadmin also reads and exports the audit log (who granted
    # what is there) and may retry the outbox (its grant notices go there).
    AdminRole.SUPERADMIN: frozenset(
        {
            Permission.ADMIN,
            Permission.GRANTS_READ,
            Permission.GRANTS_ACT,
            Permission.AUDIT_READ,
            Permission.AUDIT_EXPORT,
            Permission.OUTBOX_READ,
            Permission.OUTBOX_ACT,
        }
    ),
}


PASSWORD_PENDING = "idp:password-pending"  # noqa: S105 (a principal)
READY = "idp:ready"


class Root:
    __acl__ = (
        (Allow, READY, Permission.ACCOUNT),
        (Allow, PASSWORD_PENDING, Permission.CHANGE_PASSWORD),
        (Allow, Authenticated, "view"),
    )

    def __init__(self, request) -> None:
        self.request = request


class AdminStep(enum.StrEnum):
    """What an admin denied a page must do first (see :meth:`AdminRoot.step_for`)."""

    ENROL = "enrol"  # turn two-step verification on
    VERIFY = "verify"  # pass the second factor in this session
    REAUTHENTICATE = "reauthenticate"  # give the password again


class AdminRoot:
    """The context of every /admin page: an ACL built for the signed-in user.

    It grants the permissions of the user's admin roles to ``user:<id>``
    only when the roles take effect: the user has a confirmed second factor
    and this session passed it (:func:`idp.services.admin.second_factor_passed`).
    The acts (:data:`ADMIN_ACTS`) are granted only while the sign-in or the
    last re-authentication is younger than ``REAUTH_WINDOW``. Everything
    else is denied. Computed here, on admin pages only, so no other page
    (single sign-on above all) pays for the lookup.
    """

    def __init__(self, request) -> None:
        self.request = request
        self.roles: frozenset[AdminRole] = frozenset()
        self.enrolled = self.verified = self.fresh = False
        acl: list = []
        user = request.identity
        if user is not None and not user.must_change_password:
            self.roles = admin_rules.roles_of(request.dbsession, user.id)
        if self.roles:
            session = request.session
            row = session.row
            self.enrolled = has_second_factor(request.dbsession, user.id)
            self.verified = self.enrolled and admin_rules.second_factor_passed(
                row.authn_method if row is not None else None
            )
            self.fresh = admin_rules.fresh(
                user.id, session.authn_at, session, clock_of(request)()
            )
        if self.verified:
            granted = frozenset().union(*(ADMIN_PERMISSIONS[r] for r in self.roles))
            principal = f"user:{user.id}"
            acl = [
                (Allow, principal, permission)
                for permission in sorted(granted)
                if permission not in ADMIN_ACTS or self.fresh
            ]
        self.__acl__ = (*acl, DENY_ALL)

    def holds(self, permission: str) -> bool:
        """True if the user's roles include ``permission``, freshness aside."""
        return any(permission in ADMIN_PERMISSIONS[role] for role in self.roles)

    def step_for(self, permission: str | None) -> AdminStep | None:
        """Why ``permission`` was denied, if the user can do something about it.

        None means a plain refusal (403): no admin role, or none that
        grants ``permission`` (an auditor's POST, helpdesk on the registry).
        """
        if permission is None or not self.holds(permission):
            return None
        if not self.enrolled:
            return AdminStep.ENROL
        if not self.verified:
            return AdminStep.VERIFY
        if permission in ADMIN_ACTS and not self.fresh:
            return AdminStep.REAUTHENTICATE
        return None


def includeme(config) -> None:
    config.set_root_factory(Root)
