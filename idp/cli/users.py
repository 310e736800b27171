"""``user add|show|grant|revoke|lock|unlock|reset-password|set-email``: accounts.

The operator is trusted: errors name what is wrong (an identity number or
email already registered, say), unlike the public registration page. A new
account, or a reset one, gets a temporary password that works once, for
``idp.temporary_password_hours``, and must be changed at the first sign-in.
It is emailed through the outbox (``mail deliver`` sends it) and never
printed, unless ``--print-password`` asks for it to be printed once instead
and not emailed: for the first administrator, before mail works.

The rules, the audit events and the emails are
:class:`idp.services.accounts.AccountService`'s, which the admin console
calls too; these commands parse, call it with the operator as the actor
(no actor user and no client address; ``"by": "idp-admin"`` in each
event's detail) and print.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from webob.multidict import MultiDict

from idp.cli.common import (
    CommandError,
    app_request,
    identifier_arguments,
    identifier_of,
    refusals,
)
from idp.cli.modules import code_argument
from idp.models.user import UserCategory

CATEGORY_NAMES = ", ".join(category.value for category in UserCategory)
# RegisterForm fields, as the options of `user add` name them.
OPTIONS = {
    "category": "--category",
    "mykad": "IDENTIFIER",
    "passport_number": "IDENTIFIER",
    "passport_country": "--country",
    "full_name": "--name",
    "email": "--email",
    "phone": "--phone",
    "institution": "--institution",
}
# The account service's fields, as the other commands name them.
FIELDS = {"reason": "--reason", "email": "EMAIL"}


def _when(moment: dt.datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _accounts(request):
    from idp.services.interfaces import IAccountService

    return request.service(IAccountService)


def _actor():
    from idp.services.actor import Actor

    return Actor.command_line()


@contextmanager
def _account(args) -> Iterator:
    """The account service and the user IDENTIFIER names, in one transaction."""
    with app_request(args.config_uri, FIELDS) as request:
        accounts = _accounts(request)
        yield accounts, accounts.find(identifier_of(args))


def _masked(user) -> str:
    from idp.services.accounts import masked

    return masked(user)


# Parsers


def register(groups) -> None:
    parser = groups.add_parser("user", help="user accounts")
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)

    add_parser = commands.add_parser(
        "add",
        help="create an account with a temporary password (emailed unless "
        "--print-password)",
    )
    identifier_arguments(add_parser)
    add_parser.add_argument("--name", required=True, metavar="TEXT", help="full name")
    add_parser.add_argument("--email", required=True, metavar="EMAIL")
    add_parser.add_argument(
        "--phone", required=True, metavar="PHONE", help="mobile number"
    )
    add_parser.add_argument(
        "--category", required=True, metavar="CATEGORY", help=CATEGORY_NAMES
    )
    add_parser.add_argument(
        "--institution",
        metavar="TEXT",
        help="school, agency or institution (needed for students, educators, "
        "agency staff and private institution operators)",
    )
    add_parser.add_argument(
        "--locale",
        choices=("ms", "en"),
        default="ms",
        help="language of the emails (default: ms)",
    )
    add_parser.add_argument(
        "--role",
        dest="roles",
        action="append",
        default=[],
        type=code_argument,
        metavar="ROLE",
        help="grant this role (repeat for several)",
    )
    _print_password_argument(add_parser)
    add_parser.set_defaults(handler=add)

    show_parser = commands.add_parser("show", help="an account's details and state")
    identifier_arguments(show_parser)
    show_parser.set_defaults(handler=show)

    for action, handler, text in (
        ("grant", grant, "give a user a role"),
        ("revoke", revoke, "take a role from a user"),
    ):
        role_parser = commands.add_parser(action, help=text)
        identifier_arguments(role_parser)
        role_parser.add_argument(
            "role", type=code_argument, metavar="ROLE", help="role name"
        )
        role_parser.set_defaults(handler=handler)

    lock_parser = commands.add_parser(
        "lock",
        help="lock an account until 'user unlock': ends its sessions, emails the owner",
    )
    identifier_arguments(lock_parser)
    lock_parser.add_argument(
        "--reason", metavar="TEXT", help="recorded in the audit log"
    )
    lock_parser.set_defaults(handler=lock)

    unlock_parser = commands.add_parser(
        "unlock", help="unlock an account and reset its sign-in limits"
    )
    identifier_arguments(unlock_parser)
    unlock_parser.set_defaults(handler=unlock)

    reset_parser = commands.add_parser(
        "reset-password",
        help="replace the password with a temporary one; ends every session "
        "and voids reset links",
    )
    identifier_arguments(reset_parser)
    _print_password_argument(reset_parser)
    reset_parser.set_defaults(handler=reset_password)

    email_help = (
        "change an account's email (a mistyped one, say); tells both "
        "addresses, and re-sends a pending temporary password to the new one"
    )
    email_parser = commands.add_parser(
        "set-email", help=email_help, description=email_help
    )
    identifier_arguments(email_parser)
    email_parser.add_argument("email", metavar="EMAIL", help="the new address")
    email_parser.set_defaults(handler=set_email)


def _print_password_argument(parser) -> None:
    parser.add_argument(
        "--print-password",
        action="store_true",
        help="print the temporary password once instead of emailing it "
        "(for the first administrator, before mail works)",
    )


# Temporary passwords


def _password_lines(issued) -> list[str]:
    """What to print of a temporary password: itself once, or where it went."""
    expires = _when(issued.expires_at)
    if issued.password is not None:
        return [
            f"temporary password: {issued.password}",
            f"it works once, until {expires}, and must be changed at the "
            "first sign-in; it was not emailed",
        ]
    return [
        f"temporary password queued by email to {issued.user.email} (valid until "
        f"{expires}); 'idp-admin CONFIG mail deliver' sends it"
    ]


# Handlers: each prints only once its transaction has committed, so nothing
# is printed for an account that was not saved.


def _registration(args):
    """The values of `user add`, checked exactly as the registration form does."""
    from idp.forms.register import RegisterForm

    if args.category not in {category.value for category in UserCategory}:
        raise CommandError(
            f"--category: {args.category!r} is not one of {CATEGORY_NAMES}"
        )
    passport = bool(args.country and args.country.strip())
    data = MultiDict(
        {
            "category": args.category,
            "id_type": "passport" if passport else "mykad",
            "mykad": "" if passport else args.identifier,
            "passport_country": args.country or "",
            "passport_number": args.identifier if passport else "",
            "full_name": args.name,
            "email": args.email,
            "email_confirm": args.email,
            "phone": args.phone,
            "institution": args.institution or "",
        }
    )
    form = RegisterForm(data)
    form.validate()
    for field, option in OPTIONS.items():
        for message in form.errors.get(field, []):
            raise CommandError(f"{option}: {message.interpolate()}")
    return form.registration(args.locale)


def add(args) -> int:
    registration = _registration(args)
    with app_request(args.config_uri, FIELDS) as request:
        issued = _accounts(request).create(
            registration,
            roles=args.roles,
            reveal_password=args.print_password,
            actor=_actor(),
        )
        roles = ", ".join(role.name for role in issued.user.roles) or "-"
        lines = [
            f"created user {registration.identifier.masked} "
            f"({registration.full_name}); roles: {roles}",
            *_password_lines(issued),
        ]
    print("\n".join(lines))
    return 0


def show(args) -> int:
    with _account(args) as (accounts, user):
        standing = accounts.standing(user)
        if standing.disabled_since is not None:
            state = (
                f"locked since {_when(standing.disabled_since)}, until 'user unlock'"
            )
        elif standing.locked_until is not None:
            state = f"locked until {_when(standing.locked_until)} (wrong passwords)"
        else:
            state = "active"
        if standing.must_change_password:
            change = "yes" + (
                f" (temporary password valid until {_when(standing.temporary_until)})"
                if standing.temporary_until is not None
                else " (no usable temporary password: 'user reset-password')"
            )
        else:
            change = "no"
        last_sign_in = standing.last_sign_in
        rows = [
            ("name", user.full_name),
            ("identifier", f"{_masked(user)} ({user.identifier_kind})"),
            ("email", user.email),
            ("category", user.category),
            ("institution", user.institution or "-"),
            ("locale", user.locale),
            ("roles", ", ".join(sorted(r.name for r in user.roles)) or "-"),
            ("state", state),
            ("must change password", change),
            ("security image", "chosen" if user.security_image else "not chosen"),
            ("created", _when(user.created_at)),
            ("last sign-in", _when(last_sign_in) if last_sign_in else "never"),
        ]
    width = max(len(key) for key, _ in rows) + 1
    print("\n".join(f"{key + ':':<{width}} {value}" for key, value in rows))
    return 0


def grant(args) -> int:
    return _role(args, grant=True)


def revoke(args) -> int:
    return _role(args, grant=False)


def _role(args, *, grant: bool) -> int:
    with _account(args) as (accounts, user):
        change = accounts.grant_role if grant else accounts.revoke_role
        changed = change(user, args.role, actor=_actor())
        who = _masked(user)
    if grant:
        done = "now has" if changed else "already has"
        print(f"{who} {done} role {args.role}")
    elif changed:
        print(f"{who} no longer has role {args.role}")
    else:
        print(f"{who} did not have role {args.role}; nothing changed")
    return 0


def lock(args) -> int:
    """An administrator's lock: indefinite, until ``user unlock``."""
    from idp.services.modules import clean_label

    # Checked before the database is opened, as every argument is.
    with refusals(FIELDS):
        clean_label("reason", args.reason, required=False)
    with _account(args) as (accounts, user):
        who, since = _masked(user), user.disabled_at
        ended = accounts.lock(user, reason=args.reason, actor=_actor())
    if ended is None:
        print(f"{who} is already locked (since {_when(since)}); nothing changed")
    else:
        print(f"locked {who} until 'user unlock'; ended {ended} session(s)")
    return 0


def unlock(args) -> int:
    with _account(args) as (accounts, user):
        who = _masked(user)
        was_locked = accounts.unlock(user, actor=_actor())
    if was_locked:
        print(f"unlocked {who}; its sign-in limits were reset")
    else:
        print(f"{who} was not locked; its sign-in limits were reset")
    return 0


def reset_password(args) -> int:
    with _account(args) as (accounts, user):
        ended, issued = accounts.reset_password(
            user, reveal_password=args.print_password, actor=_actor()
        )
        lines = [
            f"reset the password of {_masked(user)}; ended {ended} session(s)",
            *_password_lines(issued),
        ]
    print("\n".join(lines))
    return 0


def set_email(args) -> int:
    """The operator's fix for a mistyped or lost address (see
    :meth:`idp.services.accounts.AccountService.set_email`)."""
    from idp.services.accounts import check_email

    # Checked before the database is opened, as every argument is.
    with refusals(FIELDS):
        check_email(args.email)
    with _account(args) as (accounts, user):
        corrected = accounts.set_email(user, args.email, actor=_actor())
        lines = [
            f"changed the email of {_masked(user)} to {corrected.email}; notices "
            f"queued to {corrected.previous} and {corrected.email}"
        ]
        if corrected.reissued:
            lines.append(
                "its temporary password had been sent to the old address: a new "
                f"temporary password was queued by email to {corrected.email} and "
                "the old one no longer works"
            )
    print("\n".join(lines))
    return 0
