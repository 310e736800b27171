"""``metadata export [FILE]``: the IdP's signed metadata for partners."""

from __future__ import annotations

import sys
from pathlib import Path

from idp.cli.common import CommandError, load_settings
from idp.saml import keys as keystore
from idp.saml import load_keypair, metadata_dir
from idp.saml.metadata import build


def register(groups) -> None:
    parser = groups.add_parser("metadata", help="the IdP's SAML metadata")
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)
    export_parser = commands.add_parser(
        "export",
        help="write the signed metadata to FILE "
        "(default: metadata/idp-metadata.xml; '-' for standard output)",
    )
    export_parser.add_argument("file", nargs="?", metavar="FILE")
    export_parser.set_defaults(handler=export)


def export(args) -> int:
    settings = load_settings(args.config_uri)
    try:
        xml = build(settings, load_keypair(settings))
    except keystore.KeyPairError as exc:
        raise CommandError(str(exc)) from None
    if args.file == "-":
        sys.stdout.buffer.write(xml)
        return 0
    target = (
        Path(args.file) if args.file else metadata_dir(settings) / "idp-metadata.xml"
    )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(xml)
    except OSError as exc:
        raise CommandError(f"cannot write {target}: {exc.strerror}") from None
    print(f"signed metadata written to {target}")
    return 0
