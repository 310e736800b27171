"""SAML: the only package that imports ``saml2``.

At start it loads the signing key pair (creating a development pair on
first run when ``idp.auto_create_keys`` is on), proves the signature
verifier refuses a tampered document (OPS-07), and prepares the metadata.
"""

import warnings
from pathlib import Path
from urllib.parse import urlsplit

# pysaml2 7.5.5 still reaches for modes.CFB, which cryptography >= 43
# deprecates on access (see setup.cfg): printed at every start and by every
# idp-admin command that loads pysaml2, with nothing an operator can do. Set
# here, before any module of this package imports saml2; only that warning
# from that one module is hidden.
warnings.filterwarnings(
    "ignore", message="CFB has been moved", module="saml2.cryptography.symmetric"
)


def _resolve(settings, name: str) -> Path:
    path = Path(settings[name])
    if not path.is_absolute():
        path = Path(settings.get("here", ".")) / path
    return path


def certs_dir(settings) -> Path:
    return _resolve(settings, "idp.certs_dir")


def metadata_dir(settings) -> Path:
    return _resolve(settings, "idp.metadata_dir")


def load_keypair(settings):
    from idp.saml import keys

    if settings["idp.auto_create_keys"]:
        host = urlsplit(settings["idp.base_url"]).hostname or "idp"
        return keys.ensure(certs_dir(settings), host, key_size=settings["idp.key_size"])
    return keys.load(certs_dir(settings))


def includeme(config):
    from idp.saml.metadata import MetadataCache
    from idp.saml.selftest import self_test
    from idp.saml.server import ServerCache

    settings = config.get_settings()
    self_test()
    keypair = load_keypair(settings)
    config.registry["idp.keypair"] = keypair
    config.registry["idp.metadata"] = MetadataCache(settings, keypair)
    config.registry["idp.saml.servers"] = ServerCache(settings, keypair)
