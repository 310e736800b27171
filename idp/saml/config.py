"""The pysaml2 configuration of the IdP, built from our settings."""

from __future__ import annotations

from typing import Any

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.saml import (
    NAMEID_FORMAT_EMAILADDRESS,
    NAMEID_FORMAT_PERSISTENT,
    NAMEID_FORMAT_TRANSIENT,
)
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from idp.i18n import LOCALES
from idp.saml.keyring import KeySet, keyset_of
from idp.saml.keys import KeyPair

SECURITY_CONTACT_TYPE = "http://refeds.org/metadata/contactType/security"
SIGNING_ALGORITHM = SIG_RSA_SHA256
DIGEST_ALGORITHM = DIGEST_SHA256
NAMEID_FORMATS = (
    NAMEID_FORMAT_PERSISTENT,
    NAMEID_FORMAT_TRANSIENT,
    NAMEID_FORMAT_EMAILADDRESS,
)


def endpoints(base_url: str) -> dict[str, list[tuple[str, str]]]:
    """The SSO and SLO endpoints fixed by the design, both bindings each."""
    return {
        "single_sign_on_service": [
            (f"{base_url}/saml/sso/redirect", BINDING_HTTP_REDIRECT),
            (f"{base_url}/saml/sso/post", BINDING_HTTP_POST),
        ],
        "single_logout_service": [
            (f"{base_url}/saml/slo/redirect", BINDING_HTTP_REDIRECT),
            (f"{base_url}/saml/slo/post", BINDING_HTTP_POST),
        ],
    }


def _localised(settings, key: str) -> list[dict[str, str]]:
    return [
        {"text": settings[f"{key}.{lang}"], "lang": lang}
        for lang in LOCALES
        if settings.get(f"{key}.{lang}")
    ]


def config_dict(settings, keys: KeySet | KeyPair) -> dict[str, Any]:
    """The pysaml2 IdP configuration as a plain dict.

    The current key signs; every published key (current, next, previous)
    decrypts, since an SP may encrypt to any key idMe's metadata lists.
    """
    keyset = keyset_of(keys)
    signing = keyset.current.pair
    organization = {}
    if settings["idp.organization.name"]:
        organization = {
            "name": [(settings["idp.organization.name"], lang) for lang in LOCALES],
            "display_name": [
                (settings[f"idp.organization.display_name.{lang}"], lang)
                for lang in LOCALES
                if settings[f"idp.organization.display_name.{lang}"]
            ],
            "url": [(settings["idp.organization.url"], lang) for lang in LOCALES],
        }
    contacts = []
    for kind in ("technical", "security"):
        email = settings[f"idp.contact.{kind}.email"]
        if email:
            contacts.append(
                {
                    "contact_type": "technical" if kind == "technical" else "other",
                    "given_name": settings[f"idp.contact.{kind}.name"] or kind,
                    "email_address": [f"mailto:{email}"],
                }
            )
    return {
        "entityid": settings["idp.entity_id"],
        "service": {
            "idp": {
                "name": settings["idp.name.ms"],
                "endpoints": endpoints(settings["idp.base_url"]),
                "name_id_format": list(NAMEID_FORMATS),
                "want_authn_requests_signed": False,
                # pysaml2 reads these per service, not at the top level; without
                # them it would sign with RSA-SHA1.
                "signing_algorithm": SIGNING_ALGORITHM,
                "digest_algorithm": DIGEST_ALGORITHM,
                "ui_info": {
                    "display_name": _localised(settings, "idp.name"),
                    "description": _localised(settings, "idp.description"),
                },
            }
        },
        "key_file": str(signing.key_file),
        "cert_file": str(signing.cert_file),
        "encryption_keypairs": [
            {"key_file": str(key.pair.key_file), "cert_file": str(key.pair.cert_file)}
            for key in keyset.keys
        ],
        "organization": organization or None,
        "contact_person": contacts or None,
        "accepted_time_diff": settings["idp.clock_skew"],
        "valid_for": settings["idp.metadata_valid_days"] * 24,
        "metadata": {},
        # Signing goes through idp.saml.crypto; this placeholder keeps pysaml2
        # from probing the xmlsec1 binary, and cannot sign if ever reached.
        "crypto_backend": "XMLSecurity",
    }


def idp_config(settings, keys: KeySet | KeyPair) -> IdPConfig:
    config = IdPConfig()
    config.load(config_dict(settings, keys))
    return config
