"""``keys generate``: the IdP's signing key pair."""

from __future__ import annotations

from urllib.parse import urlsplit

from idp.cli.common import CommandError, load_settings
from idp.saml import certs_dir
from idp.saml import keys as keystore


def register(groups) -> None:
    parser = groups.add_parser("keys", help="signing keys")
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)
    generate_parser = commands.add_parser(
        "generate",
        help="create an RSA signing key (0600) and a self-signed certificate",
    )
    generate_parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing pair (every SP must get the new metadata)",
    )
    generate_parser.set_defaults(handler=generate)


def generate(args) -> int:
    settings = load_settings(args.config_uri)
    host = urlsplit(settings["idp.base_url"]).hostname or "idp"
    try:
        pair = keystore.generate(
            certs_dir(settings),
            host,
            key_size=settings["idp.key_size"],
            overwrite=args.force,
        )
    except (keystore.KeyPairError, OSError) as exc:
        raise CommandError(str(exc)) from None
    print(f"private key: {pair.key_file} (mode 0600)")
    print(f"certificate: {pair.cert_file}")
    print(f"SHA-256 fingerprint: {pair.fingerprint}")
    return 0
