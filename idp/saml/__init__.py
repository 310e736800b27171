"""SAML: the only package that imports ``saml2``.

At start it checks idMe's keys (:mod:`idp.saml.keyring`; creating a
development pair on first run when ``idp.auto_create_keys`` is on), proves
the signature verifier refuses a tampered document (OPS-07), and prepares
the metadata and server caches, which read the key set from the database
whenever the registry generation changes.
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
    """The pair in ``signing.key``/``signing.crt``, created first in development."""
    from idp.saml import keys

    if settings["idp.auto_create_keys"]:
        host = urlsplit(settings["idp.base_url"]).hostname or "idp"
        return keys.ensure(certs_dir(settings), host, key_size=settings["idp.key_size"])
    return keys.load(certs_dir(settings))


def rolled_over(settings) -> bool:
    """Whether ``certs/`` holds a rollover's ``<kid>.key``, not only ``signing.key``."""
    from idp.saml import keys

    certs = certs_dir(settings)
    return any(path.name != keys.SIGNING_KEY for path in certs.glob("*.key"))


def check_keys_at_start(settings) -> None:
    """Refuse to start without a usable key, as far as the files can tell.

    Until its first rollover an install has one pair, ``signing.key``, which
    must be usable. Once ``certs/`` holds a rollover's ``<kid>.key``, the
    database says which keys are needed: each node reads that at its first
    request (and at every rollover step), refuses to sign if a file is
    missing or wrong, and ``/healthz`` names the file. Start-up does not
    wait on the database for it.
    """
    if not rolled_over(settings):
        load_keypair(settings)


def load_keys(settings, keyring, engine):
    """The key set for ``idp-admin``: from the database, its files checked.

    Before ``db upgrade`` there is no key table, and with the database
    unreachable nothing can be said about a rollover: an install that never
    rolled its key then has the one pair it has always had. Otherwise
    database errors propagate, and KeyPairError says which file is wrong.
    """
    from sqlalchemy import inspect
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session

    from idp.saml.keyring import keyset_of

    try:
        with Session(engine) as session:
            if not inspect(session.connection()).has_table("signing_keys"):
                return keyset_of(load_keypair(settings))
            return keyring.load(session)
    except OperationalError:
        if rolled_over(settings):
            raise
        return keyset_of(load_keypair(settings))


def includeme(config):
    from idp.saml.keyring import KeyRing
    from idp.saml.metadata import MetadataCache
    from idp.saml.selftest import self_test
    from idp.saml.server import ServerCache
    from idp.saml.tally import SsoTally

    settings = config.get_settings()
    self_test()
    check_keys_at_start(settings)  # a fresh development install gets its pair
    keyring = KeyRing(certs_dir(settings))
    config.registry["idp.keys"] = keyring
    config.registry["idp.metadata"] = MetadataCache(settings, keyring)
    config.registry["idp.saml.servers"] = ServerCache(settings, keyring)
    config.registry["idp.saml.tally"] = SsoTally()
