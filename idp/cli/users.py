"""``user add|show|grant|revoke|lock|unlock|reset-password|set-email``: accounts.

The operator is trusted: errors name what is wrong (an identity number or
email already registered, say), unlike the public registration page. A new
account, or a reset one, gets a temporary password that works once, for
``idp.temporary_password_hours``, and must be changed at the first sign-in.
It is emailed through the outbox (``mail deliver`` sends it) and never
printed, unless ``--print-password`` asks for it to be printed once instead
and not emailed: for the first administrator, before mail works.

Audit events written here have no actor and ``"by": "idp-admin"`` in their
detail; there is no client address.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from webob.multidict import MultiDict

from idp.cli.common import CommandError, app_request, refusals
from idp.cli.modules import code_argument
from idp.contact import InvalidContact, normalise_email
from idp.db import utcnow
from idp.identifiers import Identifier, InvalidIdentifier, parse_identifier
from idp.models import AuditEvent, OneTimeToken, User
from idp.models.session import end_user_sessions
from idp.models.user import UserCategory
from idp.services import mail
from idp.services.interfaces import (
    IAuditLog,
    IOutbox,
    IRateLimiter,
    IUserService,
)
from idp.services.users import EmailTaken

BY = {"by": "idp-admin"}
REASON_MAX = 200
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


def _when(moment: dt.datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _identifier(args) -> Identifier:
    try:
        return parse_identifier(args.identifier, args.country)
    except InvalidIdentifier as exc:
        option = "--country" if exc.code == "passport.country" else "IDENTIFIER"
        raise CommandError(f"{option}: {exc.message.interpolate()}") from None


def _find_user(request, args) -> User:
    identifier = _identifier(args)
    user = request.service(IUserService).find_by_identifier(identifier.value)
    if user is None:
        raise CommandError(f"no user with identity number {identifier.display}")
    return user


def _registry(request):
    from idp.services.interfaces import IModuleRegistry

    return request.service(IModuleRegistry)


def _masked(user: User) -> str:
    return Identifier(user.identifier_kind, user.identifier).masked


# Parsers


def register(groups) -> None:
    parser = groups.add_parser("user", help="user accounts")
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)

    add_parser = commands.add_parser(
        "add",
        help="create an account with a temporary password (emailed unless "
        "--print-password)",
    )
    _identifier_arguments(add_parser)
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
    _identifier_arguments(show_parser)
    show_parser.set_defaults(handler=show)

    for action, handler, text in (
        ("grant", grant, "give a user a role"),
        ("revoke", revoke, "take a role from a user"),
    ):
        role_parser = commands.add_parser(action, help=text)
        _identifier_arguments(role_parser)
        role_parser.add_argument(
            "role", type=code_argument, metavar="ROLE", help="role name"
        )
        role_parser.set_defaults(handler=handler)

    lock_parser = commands.add_parser(
        "lock",
        help="lock an account until 'user unlock': ends its sessions, emails the owner",
    )
    _identifier_arguments(lock_parser)
    lock_parser.add_argument(
        "--reason", metavar="TEXT", help="recorded in the audit log"
    )
    lock_parser.set_defaults(handler=lock)

    unlock_parser = commands.add_parser(
        "unlock", help="unlock an account and reset its sign-in limits"
    )
    _identifier_arguments(unlock_parser)
    unlock_parser.set_defaults(handler=unlock)

    reset_parser = commands.add_parser(
        "reset-password",
        help="replace the password with a temporary one; ends every session "
        "and voids reset links",
    )
    _identifier_arguments(reset_parser)
    _print_password_argument(reset_parser)
    reset_parser.set_defaults(handler=reset_password)

    email_help = (
        "change an account's email (a mistyped one, say); tells both "
        "addresses, and re-sends a pending temporary password to the new one"
    )
    email_parser = commands.add_parser(
        "set-email", help=email_help, description=email_help
    )
    _identifier_arguments(email_parser)
    email_parser.add_argument("email", metavar="EMAIL", help="the new address")
    email_parser.set_defaults(handler=set_email)


def _identifier_arguments(parser) -> None:
    parser.add_argument(
        "identifier",
        metavar="IDENTIFIER",
        help="MyKad/MyKid number, or a passport number with --country",
    )
    parser.add_argument(
        "--country",
        metavar="CCC",
        help="the passport's issuing country (ISO 3166 alpha-3, e.g. GBR)",
    )


def _print_password_argument(parser) -> None:
    parser.add_argument(
        "--print-password",
        action="store_true",
        help="print the temporary password once instead of emailing it "
        "(for the first administrator, before mail works)",
    )


# Temporary passwords


def _deliver(request, user: User, password: str, args, send) -> list[str]:
    """Email ``password`` with ``send`` (a :mod:`idp.services.mail` function),
    or return the lines that print it once."""
    expires = _when(user.temp_password_expires_at)
    if args.print_password:
        return [
            f"temporary password: {password}",
            f"it works once, until {expires}, and must be changed at the "
            "first sign-in; it was not emailed",
        ]
    send(
        request.service(IOutbox),
        user,
        password=password,
        expires_at=user.temp_password_expires_at,
    )
    return [
        f"temporary password queued by email to {user.email} (valid until "
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
    identifier = registration.identifier
    with app_request(args.config_uri, {}) as request:
        dbsession = request.dbsession
        users = request.service(IUserService)
        if users.find_by_identifier(identifier.value) is not None:
            raise CommandError(
                f"a user with identity number {identifier.display} already exists"
            )
        if users.find_by_email(registration.email) is not None:
            raise CommandError(f"a user with email {registration.email} already exists")
        roles = [
            _registry(request).find_role(name) for name in dict.fromkeys(args.roles)
        ]
        now = utcnow()
        user = users.build(registration, now)
        password = users.issue_temporary_password(user, now)
        try:
            with dbsession.begin_nested():
                dbsession.add(user)
        except IntegrityError:
            raise CommandError(
                "that identity number or email was registered just now"
            ) from None
        user.roles.extend(roles)
        request.service(IAuditLog).record(
            "account.created",
            subject_user_id=user.id,
            detail={**BY, "roles": [role.name for role in roles]},
        )
        lines = [
            f"created user {identifier.masked} ({registration.full_name}); roles: "
            + (", ".join(role.name for role in roles) or "-"),
            *_deliver(request, user, password, args, mail.account_created),
        ]
    print("\n".join(lines))
    return 0


def show(args) -> int:
    with app_request(args.config_uri, {}) as request:
        user = _find_user(request, args)
        now = utcnow()
        last_sign_in = request.dbsession.scalar(
            select(func.max(AuditEvent.occurred_at)).where(
                AuditEvent.event == "login.success",
                AuditEvent.subject_user_id == user.id,
            )
        )
        if user.disabled_at is not None:
            state = f"locked since {_when(user.disabled_at)}, until 'user unlock'"
        elif not user.usable(now):
            state = f"locked until {_when(user.locked_until)} (wrong passwords)"
        else:
            state = "active"
        if user.must_change_password:
            expires = user.temp_password_expires_at
            change = "yes" + (
                f" (temporary password valid until {_when(expires)})"
                if expires is not None and expires > now
                else " (no usable temporary password: 'user reset-password')"
            )
        else:
            change = "no"
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
    with app_request(args.config_uri, {}) as request:
        user = _find_user(request, args)
        role = _registry(request).find_role(args.role)
        already = role in user.roles
        if not already:
            user.roles.append(role)
            request.service(IAuditLog).record(
                "role.granted",
                subject_user_id=user.id,
                detail={**BY, "role": role.name},
            )
        who = _masked(user)
    if already:
        print(f"{who} already has role {args.role}")
    else:
        print(f"{who} now has role {args.role}")
    return 0


def revoke(args) -> int:
    with app_request(args.config_uri, {}) as request:
        user = _find_user(request, args)
        role = _registry(request).find_role(args.role)
        had = role in user.roles
        if had:
            user.roles.remove(role)
            request.service(IAuditLog).record(
                "role.revoked",
                subject_user_id=user.id,
                detail={**BY, "role": role.name},
            )
        who = _masked(user)
    if had:
        print(f"{who} no longer has role {args.role}")
    else:
        print(f"{who} did not have role {args.role}; nothing changed")
    return 0


def lock(args) -> int:
    """An administrator's lock: indefinite, until ``user unlock``."""
    from idp.services.modules import clean_label

    with refusals({"reason": "--reason"}):
        reason = clean_label("reason", args.reason, required=False)
    if reason is not None and len(reason) > REASON_MAX:
        raise CommandError(f"--reason: at most {REASON_MAX} characters")
    with app_request(args.config_uri, {}) as request:
        user = _find_user(request, args)
        who = _masked(user)
        since = user.disabled_at
        if since is None:
            now = utcnow()
            user.disabled_at = now
            ended = end_user_sessions(request.dbsession, user.id)
            request.service(IAuditLog).record(
                "account.locked",
                subject_user_id=user.id,
                detail={**BY, "reason": reason, "until_unlocked": True},
            )
            mail.account_locked_by_helpdesk(
                request.service(IOutbox), user, locked_at=now
            )
    if since is not None:
        print(f"{who} is already locked (since {_when(since)}); nothing changed")
    else:
        print(f"locked {who} until 'user unlock'; ended {ended} session(s)")
    return 0


def unlock(args) -> int:
    with app_request(args.config_uri, {}) as request:
        user = _find_user(request, args)
        who = _masked(user)
        was_locked = not user.usable(utcnow())
        user.locked_until = None
        user.disabled_at = None
        limiter = request.service(IRateLimiter)
        for name in ("login.identifier", "login.locks"):
            limiter.reset(name, user.identifier)
        request.service(IAuditLog).record(
            "account.unlocked", subject_user_id=user.id, detail=BY
        )
    if was_locked:
        print(f"unlocked {who}; its sign-in limits were reset")
    else:
        print(f"{who} was not locked; its sign-in limits were reset")
    return 0


def reset_password(args) -> int:
    with app_request(args.config_uri, {}) as request:
        user = _find_user(request, args)
        now = utcnow()
        password = request.service(IUserService).issue_temporary_password(user, now)
        request.dbsession.execute(
            update(OneTimeToken)
            .where(OneTimeToken.user_id == user.id, OneTimeToken.used_at.is_(None))
            .values(used_at=now)
        )
        ended = end_user_sessions(request.dbsession, user.id)
        request.service(IAuditLog).record(
            "password.admin_reset", subject_user_id=user.id, detail=BY
        )
        lines = [
            f"reset the password of {_masked(user)}; ended {ended} session(s)",
            *_deliver(request, user, password, args, mail.temporary_password_reset),
        ]
    print("\n".join(lines))
    return 0


def set_email(args) -> int:
    """The operator's fix for a mistyped or lost address.

    A temporary password still pending went to the old address (the typo
    that brought the owner to the helpdesk): it is replaced, and the new one
    mailed to the new address, so the copy in the wrong mailbox is useless.
    """
    try:
        email = normalise_email(args.email)
    except InvalidContact as exc:
        raise CommandError(
            f"EMAIL: {args.email!r} is not an email address "
            f"({exc.message.interpolate()})"
        ) from None
    with app_request(args.config_uri, {}) as request:
        user = _find_user(request, args)
        who = _masked(user)
        users = request.service(IUserService)
        if email == user.email:
            raise CommandError(f"EMAIL: {email} is already the email of {who}")
        if users.find_by_email(email) is not None:
            raise CommandError(
                f"EMAIL: {email} is already the email of another account"
            )
        try:
            old = users.change_email(user, email, by_helpdesk=True)
        except EmailTaken:
            raise CommandError(
                f"EMAIL: {email} was given to another account just now"
            ) from None
        audit = request.service(IAuditLog)
        audit.record(
            "email.changed", subject_user_id=user.id, detail={**BY, "previous": old}
        )
        lines = [
            f"changed the email of {who} to {email}; notices queued to {old} "
            f"and {email}"
        ]
        now = utcnow()
        expires = user.temp_password_expires_at
        if user.must_change_password and expires is not None and expires > now:
            password = users.issue_temporary_password(user, now)
            mail.temporary_password_reset(
                request.service(IOutbox),
                user,
                password=password,
                expires_at=user.temp_password_expires_at,
            )
            audit.record(
                "password.admin_reset",
                subject_user_id=user.id,
                detail={**BY, "reason": "email-changed"},
            )
            lines.append(
                "its temporary password had been sent to the old address: a new "
                f"temporary password was queued by email to {email} and the old "
                "one no longer works"
            )
    print("\n".join(lines))
    return 0
