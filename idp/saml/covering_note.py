"""The covering note that goes with idMe's metadata to one partner.

A partner's administrator reads it before loading the XML: who idMe is,
where to send users, which keys to expect (with fingerprints to check the
file against, and the next key and when it will start signing), until when
the file is valid, the partner's own metadata URL, and whom to ask.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from idp.saml.config import endpoints
from idp.saml.keyring import KeySet, LiveKey
from idp.saml.keys import colons
from idp.saml.partners import mdq_names, partner_urls
from idp.saml.xml import parse_xml

BINDING_NAMES = {
    "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect": "HTTP-Redirect",
    "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST": "HTTP-POST",
}


def _day(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC"


def _key_lines(key: LiveKey, role: str) -> list[str]:
    certificate = key.pair.certificate
    return [
        f"  {role}",
        f"    SHA-256 fingerprint: {colons(key.fingerprint)}",
        f"    certificate valid:   {_day(certificate.not_valid_before_utc)} to "
        f"{_day(certificate.not_valid_after_utc)}",
    ]


def covering_note(
    settings,
    keyset: KeySet,
    *,
    sp_entity_id: str,
    token: str,
    xml: bytes,
    now: dt.datetime,
) -> str:
    """The note's text (English, plain, 80 columns)."""
    base_url = settings["idp.base_url"]
    entity_id = settings["idp.entity_id"]
    valid_until = parse_xml(xml).get("validUntil", "-")
    urls = partner_urls(base_url, token)
    encoded, sha1 = mdq_names(entity_id)
    publish_days = settings["idp.key_rollover_min_publish_days"]
    lines = [
        "idMe SAML metadata: covering note",
        "=" * 34,
        "",
        f"For:      {sp_entity_id}",
        f"Prepared: {_day(now)}",
        "",
        "Identity provider",
        f"  Entity ID:            {entity_id}",
        f"  Your metadata URL:    {urls['metadata']}",
        f"  Your MDQ base URL:    {urls['mdq']}",
        f"                        (entities/{encoded}",
        f"                         or entities/{sha1})",
        "  Fetch idMe's metadata from your own URL, not a copy: it lets idMe's",
        "  operators see that you have the next key before it starts signing.",
        f"  Metadata valid until: {valid_until}",
        f"  Refresh at least every {settings['idp.metadata_cache_seconds']} seconds "
        "(cacheDuration).",
        "",
        "Endpoints",
    ]
    for kind, label in (
        ("single_sign_on_service", "SingleSignOnService"),
        ("single_logout_service", "SingleLogoutService"),
    ):
        for location, binding in endpoints(base_url)[kind]:
            lines.append(f"  {label:<20} {BINDING_NAMES[binding]:<14} {location}")
    lines += ["", "Keys (each for signing and for encryption)"]
    lines += _key_lines(
        keyset.current, "Current key: signs responses, assertions and this file"
    )
    upcoming = keyset.next
    if upcoming is not None:
        planned = (upcoming.prepared_at or now) + dt.timedelta(days=publish_days)
        lines += _key_lines(
            upcoming, f"Next key: published now, signs from about {_day(planned)}"
        )
        lines.append(
            "    Trust both keys now; idMe switches to the next key on that date."
        )
    previous = keyset.previous
    if previous is not None:
        lines += _key_lines(
            previous, "Previous key: no longer signs; still decrypts until retired"
        )
    lines += [
        "",
        "This file",
        "  Signed with the current key (RSA-SHA256, exclusive c14n).",
        f"  SHA-256 of the XML file: {hashlib.sha256(xml).hexdigest()}",
        "",
        "Contact",
    ]
    for kind in ("technical", "security"):
        email = settings[f"idp.contact.{kind}.email"]
        if email:
            name = settings[f"idp.contact.{kind}.name"] or kind
            lines.append(f"  {kind.capitalize():<10} {name} <{email}>")
    helpdesk = settings.get("idp.helpdesk.email")
    if helpdesk:
        lines.append(f"  {'Helpdesk':<10} {helpdesk}")
    return "\n".join(lines) + "\n"
