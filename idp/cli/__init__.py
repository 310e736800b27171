"""``idp-admin CONFIG_URI COMMAND ...``: the operator's tool.

Every command prints a clear error and exits non-zero on failure; none
prints a traceback for an expected problem.
"""

from __future__ import annotations

import argparse
import sys

from idp.cli import audit, db, keys, mail, metadata, modules, purge, sp, users


class CommandError(Exception):
    """An expected failure: printed as one line, exit status 1."""


def build_parser() -> argparse.ArgumentParser:
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
    for module in (audit, db, keys, mail, metadata, modules, purge, sp, users):
        module.register(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except CommandError as exc:
        print(f"idp-admin: {exc}", file=sys.stderr)
        return 1
