"""``idp-admin CONFIG_URI COMMAND ...``: the operator's tool.

Every command prints a clear error and exits non-zero on failure; none
prints a traceback for an expected problem.

Start-up stays fast because nothing is imported before the command line is
parsed: :data:`COMMANDS` names each command group's module, and only the
chosen group's module is imported (``--help`` imports none). SQLAlchemy,
Pyramid, Alembic and pysaml2 (whose XML schemas alone take half a second to
load) are paid for only by the commands that use them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NamedTuple


class Group(NamedTuple):
    module: str  # imported only when the group is chosen
    help: str


#: Command group -> the module that registers it, and its one-line help. A
#: module's ``register(groups)`` adds its groups with this same help text
#: (``tests/unit/test_cli.py`` holds them equal).
COMMANDS: dict[str, Group] = {
    "admin": Group("idp.cli.admin", "admin console roles"),
    "audit": Group("idp.cli.audit", "the hash-chained audit log"),
    "db": Group("idp.cli.db", "database schema"),
    "doctor": Group(
        "idp.cli.doctor",
        "check this node: libraries, keys, database, clock, settings, mail, sources",
    ),
    "keys": Group("idp.cli.keys", "signing keys"),
    "mail": Group("idp.cli.mail", "outgoing email"),
    "metadata": Group("idp.cli.metadata", "the IdP's SAML metadata"),
    "module": Group(
        "idp.cli.modules", "MOEIS modules (the systems users reach by role)"
    ),
    "purge": Group(
        "idp.cli.purge",
        "delete expired sessions, tokens, challenges and old sent mail",
    ),
    "role": Group("idp.cli.modules", "roles, and the modules each grants"),
    "source": Group(
        "idp.cli.source",
        "partners' metadata sources (many SPs from one signed document)",
    ),
    "serve": Group(
        "idp.cli.serve", "run a web node (waitress), stopped gracefully by SIGTERM"
    ),
    "sp": Group("idp.cli.sp", "registered SAML service providers"),
    "two-step": Group(
        "idp.cli.two_step", "users' two-step verification (TOTP and recovery codes)"
    ),
    "user": Group("idp.cli.users", "user accounts"),
}


def build_parser(group: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``group``, that group's module is imported and registered.

    The other groups are placeholders carrying their help text, so the
    top-level ``--help`` lists every command without importing any of them.
    """
    parser = argparse.ArgumentParser(
        prog="idp-admin",
        description=(
            "Operate an idMe IdP: database, keys, metadata, mail, audit, purging, "
            "users, roles, modules and service providers."
        ),
    )
    parser.add_argument(
        "config_uri", metavar="CONFIG_URI", help="the ini file, e.g. production.ini"
    )
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    if group is not None:
        importlib.import_module(COMMANDS[group].module).register(groups)
    for name, entry in COMMANDS.items():
        if name not in groups.choices:
            # No --help of its own: "CONFIG user --help" must get past this
            # placeholder to the real parser of the second pass.
            groups.add_parser(name, help=entry.help, add_help=False)
    return parser


def chosen_group(argv: list[str]) -> str:
    """The command group named in ``argv``; argparse's exit on a bad line."""
    known, _rest = build_parser().parse_known_args(argv)
    return known.group


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _run(sys.argv[1:] if argv is None else argv)
        finally:
            # Flush here, where a closed pipe is still ours to catch, not in
            # the interpreter's shutdown, which prints "Exception ignored".
            sys.stdout.flush()
    except BrokenPipeError:
        # "idp-admin ... | head": the reader has gone, which is not an error
        # worth a traceback. Point stdout at /dev/null so that nothing else
        # can fail writing to it (the recipe of Python's signal docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _run(argv: list[str]) -> int:
    parser = build_parser(chosen_group(argv))
    args = parser.parse_args(argv)
    # Every group's module has imported it by now; importing it at the top
    # would load Pyramid's settings helpers for "--help" too.
    from idp.cli.common import CommandError, database_error

    try:
        return args.handler(args) or 0
    except CommandError as exc:
        print(f"idp-admin: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # Database errors are handled here, once, for every command: one line
        # naming the database and the driver's cause.
        message = database_error(exc)
        if message is None:
            raise
        print(f"idp-admin: {message}", file=sys.stderr)
        return 1
