"""Typed, validated settings.

The ini files give strings; :func:`parse_settings` turns the ones the IdP
knows into typed values once, at start, and refuses to start with a one-line
error naming the setting when one is wrong. Secrets may come from the
environment (and in production must not be the shipped development values).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pyramid.settings import asbool

from idp import crest

ENVIRONMENTS = ("development", "production")

# Environment variables that override a secret setting. Only secrets are
# taken from the environment: everything else lives in the ini file.
SECRET_ENV = {
    "idp.session_secret": "IDP_SESSION_SECRET",
    "idp.hmac_key": "IDP_HMAC_KEY",
    "sqlalchemy.url": "IDP_DATABASE_URL",
    "mail.smtp_password": "IDP_SMTP_PASSWORD",
    "captcha.secret": "IDP_CAPTCHA_SECRET",
}

# Secrets every node must have; production refuses to start without them.
REQUIRED_SECRETS = ("idp.session_secret", "idp.hmac_key")
MIN_SECRET_BYTES = 32
# The development ini's secrets all carry this marker, so production can
# recognise and refuse them whichever one an operator copied.
DEV_SECRET_MARKER = "development-only"  # noqa: S105 (a marker, not a secret)


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names it on one line."""


@dataclass(frozen=True)
class Option:
    parse: Callable[[str], Any]
    default: Any


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(str(value).strip())
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def _bytes_between(low: int, high: int) -> Callable[[str], int]:
    """A size in bytes; the bounds are said in KiB/MiB, as people think of them."""

    def parse(value: str) -> int:
        from idp.units import format_bytes

        number = int(str(value).strip())
        if not low <= number <= high:
            raise ValueError(
                f"must be between {format_bytes(low)} and {format_bytes(high)}, "
                "in bytes"
            )
        return number

    return parse


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        value = str(value).strip()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _text(value: str) -> str:
    return str(value).strip()


def _url(value: str) -> str:
    value = str(value).strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _networks(value: str) -> tuple[Any, ...]:
    """CIDRs separated by spaces or commas; one covering everything is refused."""
    import ipaddress

    networks = []
    for item in str(value).replace(",", " ").split():
        try:
            network = ipaddress.ip_network(item, strict=True)
        except ValueError as exc:
            raise ValueError(
                f"{item!r} is not a network in CIDR form ({exc})"
            ) from None
        if network.prefixlen == 0:
            raise ValueError(f"{item!r} would allow every address")
        networks.append(network)
    return tuple(networks)


def _timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    value = str(value).strip()
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            "must be an IANA time zone such as Asia/Kuala_Lumpur"
        ) from None
    return value


def _bool(value: str) -> bool:
    text = str(value).strip().lower()
    if text not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
        raise ValueError("must be true or false")
    return asbool(text)


OPTIONS: dict[str, Option] = {
    "idp.environment": Option(_choice(*ENVIRONMENTS), "production"),
    "idp.base_url": Option(_url, None),
    "idp.entity_id": Option(_text, ""),
    "idp.session_secret": Option(_text, ""),
    "idp.hmac_key": Option(_text, ""),
    "idp.bcrypt_rounds": Option(_int_between(4, 16), 12),
    "idp.clock_skew": Option(_int_between(0, 600), 180),
    # How old an AuthnRequest/LogoutRequest may be (plus the clock skew).
    "idp.saml.request_lifetime": Option(_int_between(30, 3600), 300),
    # How long an assertion may be used (NotOnOrAfter); SAML-35: at most 5 min.
    "idp.saml.assertion_lifetime": Option(_int_between(30, 300), 300),
    # How long a stored request waits for the user to sign in.
    "idp.saml.pending_seconds": Option(_int_between(60, 3600), 1800),
    # How long single logout waits for each service before moving on.
    "idp.saml.logout_seconds": Option(_int_between(2, 120), 10),
    # Scope of subject-id / pairwise-id values (default: the base URL's host).
    "idp.saml.scope": Option(_text, ""),
    "idp.session_idle_seconds": Option(_int_between(60, 24 * 3600), 1800),
    "idp.session_max_seconds": Option(_int_between(300, 7 * 24 * 3600), 43200),
    # Purging (idp-admin purge; mail deliver --loop runs it every interval):
    # used or expired reset links and temporary passwords are kept this many
    # days, sent outbox rows that many; expired sessions and challenges go.
    "idp.purge.token_days": Option(_int_between(1, 365), 7),
    "idp.purge.outbox_days": Option(_int_between(1, 365), 30),
    "idp.purge.interval_seconds": Option(_int_between(60, 24 * 3600), 300),
    "idp.purge.batch_size": Option(_int_between(10, 10000), 500),
    # Decoys are real users' pairs once this many users are in the pool
    # (idp/services/security_image.py); the generator's until then.
    "idp.decoy_pool.ready_at": Option(_int_between(50, 1_000_000), 200),
    "idp.allowed_hosts": Option(_text, ""),
    "idp.certs_dir": Option(_text, "certs"),
    "idp.metadata_dir": Option(_text, "metadata"),
    "idp.auto_create_keys": Option(_bool, False),
    "idp.key_size": Option(_int_between(2048, 8192), 3072),
    "idp.metadata_valid_days": Option(_int_between(1, 365), 7),
    "idp.metadata_cache_seconds": Option(_int_between(60, 7 * 24 * 3600), 3600),
    # Key rollover (idp-admin keys rollover): how long the next key is
    # published before it may sign, and how long the previous one stays
    # published after the switch, before it may be retired.
    "idp.key_rollover_min_publish_days": Option(_int_between(0, 365), 7),
    "idp.key_rollover_min_overlap_days": Option(_int_between(0, 365), 7),
    # A partner's metadata whose validUntil is further out is refused: a
    # signed document valid for years could be replayed long after its
    # keys were withdrawn (idp.saml.sources).
    "idp.metadata_max_validity_days": Option(_int_between(1, 365), 28),
    "idp.max_request_body": Option(_bytes_between(1024, 64 * 1024 * 1024), 1048576),
    # A request that waited longer than this (from the front proxy's
    # X-Request-Start to a thread picking it up) gets the busy page at once
    # instead of work its user gave up on (idp.queuing); 0: never.
    "idp.queue_timeout_seconds": Option(_int_between(0, 600), 30),
    "idp.name.ms": Option(_text, "idMe"),
    "idp.name.en": Option(_text, "idMe"),
    "idp.description.ms": Option(_text, ""),
    "idp.description.en": Option(_text, ""),
    "idp.organization.name": Option(_text, ""),
    "idp.organization.display_name.ms": Option(_text, ""),
    "idp.organization.display_name.en": Option(_text, ""),
    "idp.organization.url": Option(_text, ""),
    "idp.contact.technical.name": Option(_text, ""),
    "idp.contact.technical.email": Option(_text, ""),
    "idp.contact.security.name": Option(_text, ""),
    "idp.contact.security.email": Option(_text, ""),
    "idp.timezone": Option(_timezone, "Asia/Kuala_Lumpur"),
    "idp.helpdesk.name.ms": Option(_text, ""),
    "idp.helpdesk.name.en": Option(_text, ""),
    "idp.helpdesk.address": Option(_text, ""),
    "idp.helpdesk.phone": Option(_text, ""),
    "idp.helpdesk.email": Option(_text, ""),
    "idp.helpdesk.hours.ms": Option(_text, ""),
    "idp.helpdesk.hours.en": Option(_text, ""),
    "idp.temporary_password_hours": Option(_int_between(1, 30 * 24), 72),
    # The privacy notice's data controller (PDPA 2010) and how to reach them;
    # empty: the organisation's display name and the helpdesk's contact.
    "idp.privacy.controller.ms": Option(_text, ""),
    "idp.privacy.controller.en": Option(_text, ""),
    "idp.privacy.email": Option(_text, ""),
    "idp.privacy.address": Option(_text, ""),
    # The footer's crest (idp/crest.py): nothing is shipped.
    "idp.crest.path": Option(_text, ""),
    "idp.crest.alt_ms": Option(_text, ""),
    "idp.crest.alt_en": Option(_text, ""),
    # Fetching partners' metadata over HTTPS (idp/saml/fetch.py, OPS-04):
    # only public addresses unless allowlisted here (CIDRs), a connect and a
    # whole-fetch timeout in seconds, a size cap (after gzip decompression),
    # CAs (empty: the system's), and plain http to 127.0.0.1 in development.
    "idp.metadata_fetch_allow": Option(_networks, ()),
    "idp.metadata_fetch_max_bytes": Option(
        _bytes_between(1024 * 1024, 1024 * 1024 * 1024), 100 * 1024 * 1024
    ),
    "idp.metadata_fetch_connect_timeout": Option(_int_between(1, 60), 5),
    "idp.metadata_fetch_timeout": Option(_int_between(2, 3600), 300),
    "idp.metadata_fetch_ca_bundle": Option(_text, ""),
    "idp.metadata_fetch_allow_http": Option(_bool, False),
    # Refreshing URL and MDQ sources (idp/saml/refresh.py): the next refresh
    # follows the document's cacheDuration, kept between min and max; after
    # a failure the next attempt waits retry, doubling up to retry_max.
    "idp.metadata_refresh_min_seconds": Option(_int_between(60, 86400), 600),
    "idp.metadata_refresh_max_seconds": Option(_int_between(600, 7 * 86400), 86400),
    "idp.metadata_refresh_retry_seconds": Option(_int_between(10, 3600), 60),
    "idp.metadata_refresh_retry_max_seconds": Option(_int_between(60, 86400), 3600),
    # An MDQ lookup made while a user waits (idp/saml/mdq.py): the whole
    # fetch's limit in seconds.
    "idp.mdq_timeout": Option(_int_between(1, 30), 3),
    # /metrics (idp/metrics.py): the networks (CIDRs) a scraper may ask from,
    # as request.client_addr sees them; empty: 404 to everyone. SSO counts
    # carry each SP's entity ID as a label (a series per SP and outcome);
    # false folds them into sp="all" for a federation of thousands of SPs.
    "idp.metrics_allow": Option(_networks, ()),
    "idp.metrics_sso_by_sp": Option(_bool, True),
    "mail.sender": Option(_text, ""),
    "mail.backend": Option(_text, "idp.services.delivery.SMTPSender"),
    "mail.host": Option(_text, "localhost"),
    "mail.port": Option(_int_between(1, 65535), 587),
    "mail.security": Option(_choice("starttls", "ssl", "none"), "starttls"),
    "mail.username": Option(_text, ""),
    "mail.smtp_password": Option(_text, ""),
    "mail.ca_file": Option(_text, ""),
    "mail.timeout": Option(_int_between(1, 300), 30),
    "mail.directory": Option(_text, "var/mail"),
    "mail.deliver_in_process": Option(_bool, False),
    "mail.poll_seconds": Option(_int_between(1, 3600), 5),
    "mail.batch_size": Option(_int_between(1, 1000), 50),
    "mail.retry_seconds": Option(_int_between(1, 3600), 60),
    "mail.retry_max_seconds": Option(_int_between(60, 7 * 24 * 3600), 3600),
    "captcha.enabled": Option(_bool, True),
    "captcha.expires_seconds": Option(_int_between(60, 3600), 900),
    "captcha.backend": Option(
        _choice("image", "recaptcha", "hcaptcha", "turnstile"), "image"
    ),
    "captcha.site_key": Option(_text, ""),
    "captcha.secret": Option(_text, ""),
    "captcha.verify_url": Option(_text, ""),
    "captcha.timeout": Option(_int_between(1, 60), 5),
    # Browser tests only: a directory where each new image challenge's answer
    # is written, so a test can solve the real captcha. Refused unless
    # development and the test runner's CAPTCHA_HOOK_ENV are both present.
    "captcha.test_answers_dir": Option(_text, ""),
}

# Set only by the browser-test runner (tests/e2e); without it the captcha
# test hook is refused, so no ini file alone can turn it on.
CAPTCHA_HOOK_ENV = "IDP_E2E_CAPTCHA_HOOK"


# Our prefixes: every setting under them must be one the IdP reads, so a typo
# ("mail.hots") stops the start instead of leaving a default silently in
# force. ``ratelimit.`` names are checked too, against the limiters
# themselves (idp.services.ratelimit). ``sqlalchemy.`` is SQLAlchemy's
# engine_from_config, whose options (pool_size, echo, connect_args...) we pass
# on and do not own.
CHECKED_PREFIXES = ("idp.", "mail.", "captcha.")
# Keys under those prefixes set by code, never by an ini: what parse_settings
# derives, and the test seam handing the app an engine.
DERIVED = frozenset({"idp.development", "idp.dbengine", "idp.crest"})


def known_settings() -> frozenset[str]:
    """Every ini setting under :data:`CHECKED_PREFIXES` the IdP reads."""
    return frozenset(OPTIONS) | DERIVED


def unknown_settings(raw: Mapping[str, Any]) -> list[str]:
    """One message per setting under our prefixes that nothing reads."""
    from difflib import get_close_matches

    known = known_settings()
    candidates = sorted(OPTIONS)
    if any(name.startswith("ratelimit.") for name in raw):
        # Imported only when needed: the limiter names live with the limiters.
        from idp.services.ratelimit import LIMITS, SETTING_PREFIX, STORAGE_SETTING

        limits = {SETTING_PREFIX + name for name in LIMITS} | {STORAGE_SETTING}
        known, candidates = known | limits, candidates + sorted(limits)
    messages = []
    for name in sorted(raw):
        if not name.startswith((*CHECKED_PREFIXES, "ratelimit.")) or name in known:
            continue
        close = get_close_matches(name, candidates, n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        messages.append(f"unknown setting {name}{hint}")
    return messages


def parse_settings(
    raw: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Return a copy of ``raw`` with every known option typed and checked.

    Keys outside our prefixes (pyramid's, jinja2's, tm's...) pass through
    unchanged; an unknown one under ``idp.``, ``mail.``, ``captcha.`` or
    ``ratelimit.`` is refused, with the closest known name. Raises
    :class:`SettingsError` naming the bad settings on one line.
    """
    environ = os.environ if environ is None else environ
    unknown = unknown_settings(raw)
    if unknown:
        raise SettingsError("; ".join(unknown))
    settings = dict(raw)
    for name, variable in SECRET_ENV.items():
        if environ.get(variable):
            settings[name] = environ[variable]

    for name, option in OPTIONS.items():
        value = settings.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if option.default is None:
                raise SettingsError(f"{name}: this setting is required")
            settings[name] = option.default
            continue
        if isinstance(value, str):
            try:
                settings[name] = option.parse(value)
            except ValueError as exc:
                raise SettingsError(f"{name}: {exc} (got {value!r})") from None

    if not settings.get("sqlalchemy.url"):
        raise SettingsError("sqlalchemy.url: this setting is required")
    if not settings["idp.entity_id"]:
        settings["idp.entity_id"] = settings["idp.base_url"] + "/saml/metadata"
    if not settings["idp.saml.scope"]:
        settings["idp.saml.scope"] = urlsplit(settings["idp.base_url"]).hostname
    if not settings["mail.sender"]:
        raise SettingsError("mail.sender: this setting is required")
    _check_address("mail.sender", settings["mail.sender"])
    _check_captcha(settings)
    _check_refresh(settings)
    for name in ("idp.privacy.email", "idp.contact.security.email"):
        if settings[name]:
            _check_address(name, settings[name])
    try:
        settings["idp.crest"] = crest.load(settings)
    except crest.CrestError as exc:
        raise SettingsError(str(exc)) from None
    settings["idp.development"] = settings["idp.environment"] == "development"
    _check_captcha_hook(settings, environ)
    if not settings["idp.development"]:
        _check_production(settings)
    elif any(not settings[name] for name in REQUIRED_SECRETS):
        missing = next(name for name in REQUIRED_SECRETS if not settings[name])
        raise SettingsError(f"{missing}: this setting is required")
    return settings


def _check_address(name: str, value: str) -> None:
    from email.headerregistry import Address
    from email.utils import parseaddr

    display, address = parseaddr(value)
    local, at, domain = address.rpartition("@")
    try:
        if not (at and local and "." in domain) or any(c in value for c in "\r\n"):
            raise ValueError(value)
        Address(display_name=display, addr_spec=address)
    except ValueError:
        raise SettingsError(f"{name}: not an email address (got {value!r})") from None


def _check_captcha(settings: dict[str, Any]) -> None:
    backend = settings["captcha.backend"]
    if backend == "image" or not settings["captcha.enabled"]:
        return
    for name in ("captcha.site_key", "captcha.secret"):
        if not settings[name]:
            hint = " (or IDP_CAPTCHA_SECRET)" if name == "captcha.secret" else ""
            raise SettingsError(
                f"{name}: required when captcha.backend = {backend}{hint}"
            )
    url = settings["captcha.verify_url"]
    if url and not url.startswith(("https://", "http://127.0.0.1", "http://[::1]")):
        raise SettingsError(
            "captcha.verify_url: must be https:// (http only on this machine)"
        )


def _check_refresh(settings: dict[str, Any]) -> None:
    bundle = settings["idp.metadata_fetch_ca_bundle"]
    if bundle and not os.path.isfile(bundle):
        raise SettingsError(
            f"idp.metadata_fetch_ca_bundle: no such file {bundle!r} "
            "(a PEM file of CA certificates; empty: the system's)"
        )
    for low, high in (
        ("idp.metadata_refresh_min_seconds", "idp.metadata_refresh_max_seconds"),
        (
            "idp.metadata_refresh_retry_seconds",
            "idp.metadata_refresh_retry_max_seconds",
        ),
    ):
        if settings[low] > settings[high]:
            raise SettingsError(
                f"{low}: must not be more than {high} "
                f"({settings[low]} > {settings[high]})"
            )


def _check_captcha_hook(settings: dict[str, Any], environ: Mapping[str, str]) -> None:
    """The test hook would hand every captcha's answer to whoever reads the
    directory: only a development run started by the browser tests may have it."""
    if not settings["captcha.test_answers_dir"]:
        return
    if not settings["idp.development"]:
        raise SettingsError(
            "captcha.test_answers_dir: a browser-test hook, refused in production"
        )
    if environ.get(CAPTCHA_HOOK_ENV) != "1":
        raise SettingsError(
            f"captcha.test_answers_dir: a browser-test hook, refused unless the "
            f"test runner sets {CAPTCHA_HOOK_ENV}=1"
        )
    if settings["captcha.backend"] != "image":
        raise SettingsError(
            "captcha.test_answers_dir: only the image captcha has answers to write"
        )


def _check_production(settings: dict[str, Any]) -> None:
    for name in REQUIRED_SECRETS:
        value = settings[name]
        variable = SECRET_ENV[name]
        if not value:
            raise SettingsError(
                f"{name}: required in production; set the {variable} "
                "environment variable"
            )
        if DEV_SECRET_MARKER in value:
            raise SettingsError(
                f"{name}: the development value must not be used in production; "
                f"set {variable}"
            )
        if len(value.encode()) < MIN_SECRET_BYTES:
            raise SettingsError(
                f"{name}: must be at least {MIN_SECRET_BYTES} bytes in production"
            )
    if settings["idp.metadata_fetch_allow_http"]:
        raise SettingsError(
            "idp.metadata_fetch_allow_http: must be false in production; "
            "metadata is fetched over https"
        )
    if settings["idp.auto_create_keys"]:
        raise SettingsError(
            "idp.auto_create_keys: must be false in production; "
            "create keys with 'idp-admin CONFIG keys generate'"
        )
    if not settings["idp.base_url"].startswith("https://"):
        raise SettingsError("idp.base_url: must be an https:// URL in production")
    if settings["mail.security"] == "none" and settings["mail.username"]:
        raise SettingsError(
            "mail.security: must be starttls or ssl when mail.username is set; "
            "the SMTP password would cross the network in clear"
        )
