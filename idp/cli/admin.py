"""``idp-admin CONFIG admin grant|revoke|list``: who may use the admin console.

The first superadmin can only be made here: the console lets a superadmin
grant roles, and there is none until the operator makes one. Each change is
:class:`idp.services.admin.AdminRoles`'s, audited with the operator as the
actor. A role takes effect only once its holder has turned two-step
verification on (Akaun saya) and signed in with a code.
"""

from __future__ import annotations

import argparse

from idp.cli.common import app_request, identifier_arguments, identifier_of

ROLE_NAMES = ("helpdesk", "registry", "auditor", "superadmin")
ROLE_HELP = (
    "helpdesk (find users, unlock, send a reset, end sessions, correct an "
    "email), registry (modules, roles, service providers, sources), auditor "
    "(read-only everything, audit export), superadmin (grant admin roles)"
)


def _role(text: str) -> str:
    role = text.strip().lower()
    if role not in ROLE_NAMES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an admin role (one of {', '.join(ROLE_NAMES)})"
        )
    return role


def register(groups) -> None:
    parser = groups.add_parser("admin", help="admin console roles")
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)
    for name, handler, text in (
        ("grant", grant, "give a user an admin role"),
        ("revoke", revoke, "take an admin role from a user"),
    ):
        sub = commands.add_parser(name, help=text)
        identifier_arguments(sub)
        sub.add_argument("role", metavar="ROLE", type=_role, help=ROLE_HELP)
        sub.set_defaults(handler=handler)
    list_parser = commands.add_parser("list", help="every user holding an admin role")
    list_parser.set_defaults(handler=list_holders)


def _change(args, *, give: bool) -> int:
    from idp.services.accounts import masked
    from idp.services.actor import Actor
    from idp.services.interfaces import IAccountService, IAdminRoles

    with app_request(args.config_uri, {"role": "ROLE"}) as request:
        user = request.service(IAccountService).find(identifier_of(args))
        roles = request.service(IAdminRoles)
        change = roles.grant if give else roles.revoke
        changed = change(user, args.role, actor=Actor.command_line())
        who = masked(user)
        enrolled = _enrolled(request, user)
    if give:
        print(f"{who} {'now has' if changed else 'already has'} admin role {args.role}")
        if not enrolled:
            print(
                "note: it takes effect once they turn two-step verification on "
                "(My account) and sign in with a code"
            )
    elif changed:
        print(f"{who} no longer has admin role {args.role}")
    else:
        print(f"{who} did not have admin role {args.role}; nothing changed")
    return 0


def _enrolled(request, user) -> bool:
    from idp.services.two_factor import has_second_factor

    return has_second_factor(request.dbsession, user.id)


def grant(args) -> int:
    return _change(args, give=True)


def revoke(args) -> int:
    return _change(args, give=False)


def list_holders(args) -> int:
    from idp.services.accounts import masked
    from idp.services.interfaces import IAdminRoles

    with app_request(args.config_uri) as request:
        holders = request.service(IAdminRoles).holders()
        lines = [
            f"{masked(user)}  {user.full_name}  "
            f"{', '.join(role.value for role in roles)}"
            f"{'' if _enrolled(request, user) else '  (two-step verification off)'}"
            for user, roles in holders
        ]
    print(
        "\n".join(lines)
        or "nobody holds an admin role; make the first superadmin with "
        "'admin grant IDENTIFIER superadmin'"
    )
    return 0
