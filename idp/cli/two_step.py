"""``idp-admin CONFIG two-step status|off IDENTIFIER``: the helpdesk's part.

Someone who lost both their phone and their recovery codes cannot sign in,
and must not be able to turn the second factor off alone: that is what it
protects. The helpdesk checks who they are (as for ``user reset-password``)
and turns it off here; the owner is told by email, the change is audited,
and the owner can turn it on again from Akaun saya with the new phone.
"""

from __future__ import annotations

from idp.cli.common import CommandError, app_request, confirmed
from idp.identifiers import Identifier, InvalidIdentifier, parse_identifier
from idp.services.interfaces import ITwoFactorService, IUserService


def register(groups) -> None:
    parser = groups.add_parser(
        "two-step", help="users' two-step verification (TOTP and recovery codes)"
    )
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)
    status_parser = commands.add_parser(
        "status", help="whether a user has two-step verification on"
    )
    _identifier_arguments(status_parser)
    status_parser.set_defaults(handler=status)
    off_parser = commands.add_parser(
        "off",
        help="turn a user's two-step verification off (after checking who "
        "they are); they are emailed",
    )
    _identifier_arguments(off_parser)
    off_parser.add_argument(
        "--yes", action="store_true", help="do not ask for confirmation"
    )
    off_parser.set_defaults(handler=off)


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


def _find_user(request, args):
    try:
        identifier = parse_identifier(args.identifier, args.country)
    except InvalidIdentifier as exc:
        option = "--country" if exc.code == "passport.country" else "IDENTIFIER"
        raise CommandError(f"{option}: {exc.message.interpolate()}") from None
    user = request.service(IUserService).find_by_identifier(identifier.value)
    if user is None:
        raise CommandError(f"no user with identity number {identifier.display}")
    return user, Identifier(user.identifier_kind, user.identifier).masked


def status(args) -> int:
    with app_request(args.config_uri) as request:
        user, who = _find_user(request, args)
        two_factor = request.service(ITwoFactorService)
        if two_factor.enabled(user):
            left = two_factor.recovery_codes_left(user)
            print(f"{who}: two-step verification on; {left} unused recovery code(s)")
        else:
            print(f"{who}: two-step verification off")
    return 0


def off(args) -> int:
    with app_request(args.config_uri) as request:
        user, who = _find_user(request, args)
        two_factor = request.service(ITwoFactorService)
        if not two_factor.enabled(user):
            print(f"{who}: two-step verification is already off; nothing changed")
            return 0
        if not args.yes and not confirmed(
            f"Turn two-step verification off for {who}? Check who is asking first."
        ):
            raise CommandError(
                "not confirmed (answer yes, or pass --yes); nothing changed"
            )
        two_factor.disable(user, how="helpdesk")
    print(f"turned two-step verification off for {who}; they have been emailed")
    return 0
