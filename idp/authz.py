"""Permissions, and the root object whose ACL grants them.

Pages that anyone may open (home, help, registration, sign-in) need no
permission. Signed-in pages need ``account``. A user who must still choose a
new password holds only ``change-password``: nothing else, single sign-on
included, is reachable until the new password is set.
"""

import enum

from pyramid.authorization import Allow, Authenticated


class Permission(enum.StrEnum):
    ACCOUNT = "account"
    CHANGE_PASSWORD = "change-password"  # noqa: S105 (a permission name)


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


def includeme(config) -> None:
    config.set_root_factory(Root)
