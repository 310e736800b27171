"""``metadata export [FILE] [--for ENTITYID]``: the IdP's signed metadata for partners.

With ``--for``, the file is the one partner's copy, with a covering note
beside it (``FILE`` with ``.txt``): the partner's own metadata URL (so that
its fetches tell ``keys rollover status`` it has seen a next key), the
endpoints, the keys' fingerprints and validity, the next key and when it
will sign, and whom to contact.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path

from idp.cli.common import CommandError, load_settings
from idp.saml import keys as keystore
from idp.saml import metadata_dir


def register(groups) -> None:
    parser = groups.add_parser("metadata", help="the IdP's SAML metadata")
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)
    export_parser = commands.add_parser(
        "export",
        help="write the signed metadata to FILE "
        "(default: metadata/idp-metadata.xml; '-' for standard output)",
    )
    export_parser.add_argument("file", nargs="?", metavar="FILE")
    export_parser.add_argument(
        "--for",
        dest="partner",
        metavar="ENTITYID",
        help="a registered SP's copy, with a covering note (FILE.txt) giving its "
        "own metadata URL, the endpoints, key fingerprints and the next key",
    )
    export_parser.set_defaults(handler=export)


def _slug(entity_id: str) -> str:
    text = re.sub(r"^[a-z]+:/*", "", entity_id.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:80] or "sp"


def _write(target: Path, data: bytes) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    except OSError as exc:
        raise CommandError(f"cannot write {target}: {exc.strerror}") from None


def export(args) -> int:
    from sqlalchemy.orm import Session

    from idp.db import make_engine
    from idp.saml import certs_dir, load_keys
    from idp.saml.keyring import KeyRing
    from idp.saml.metadata import build

    settings = load_settings(args.config_uri)
    if args.partner is not None and args.file == "-":
        raise CommandError("--for writes two files (XML and note); give a FILE path")
    engine = make_engine(settings)
    try:
        try:
            keyset = load_keys(settings, KeyRing(certs_dir(settings)), engine)
            xml = build(settings, keyset)
        except keystore.KeyPairError as exc:
            raise CommandError(str(exc)) from None
        note = None
        if args.partner is not None:
            from idp.saml.covering_note import covering_note
            from idp.saml.partners import partner_token
            from idp.saml.registry import find_sp
            from idp.saml.sp_metadata import MetadataError

            with Session(engine) as session:
                try:
                    sp = find_sp(session, args.partner)
                except MetadataError as exc:
                    raise CommandError(
                        f"{exc}; import its metadata first ('sp import')"
                    ) from None
                if not sp.enabled:
                    raise CommandError(
                        f"{sp.entity_id} is disabled; its metadata URL would "
                        "answer 404 ('sp enable' it first)"
                    )
                token = partner_token(settings["idp.hmac_key"], sp)
                note = covering_note(
                    settings,
                    keyset,
                    sp_entity_id=sp.entity_id,
                    token=token,
                    xml=xml,
                    now=dt.datetime.now(dt.UTC),
                )
    finally:
        engine.dispose()
    if args.file == "-":
        sys.stdout.buffer.write(xml)
        return 0
    name = (
        f"idp-metadata-for-{_slug(args.partner)}.xml"
        if args.partner is not None
        else "idp-metadata.xml"
    )
    target = Path(args.file) if args.file else metadata_dir(settings) / name
    _write(target, xml)
    print(f"signed metadata written to {target}")
    if note is not None:
        note_path = target.with_suffix(".txt")
        _write(note_path, note.encode("utf-8"))
        print(f"covering note written to {note_path}")
    return 0
