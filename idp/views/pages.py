"""The footer's pages and the developers page.

Privacy notice, security policy, accessibility statement and helpdesk for
everyone; "Untuk pembangun / For developers" for the people who connect a
service. Every name, address and number on them comes from settings or from
the code that does the work (endpoints, NameID formats, attribute names, the
signing certificate), so a page cannot drift from what the IdP does.
"""

from __future__ import annotations

from pyramid.httpexceptions import HTTPNotFound
from pyramid.view import view_config

from idp.csp import ContentSecurityPolicy
from idp.i18n import _
from idp.saml.config import NAMEID_FORMATS, endpoints
from idp.saml.registry import DEFAULT_RELEASE
from idp.saml.server import attribute_uri_names
from idp.services.tokens import RESET_LIFETIME
from idp.views.help import _in_language
from idp.views.help import helpdesk as helpdesk_details

# The crest may be an operator's SVG: opened directly it must not run
# anything in the IdP's origin. A file, not a page: this replaces the base.
CREST_POLICY = {
    "default-src": ("'none'",),
    "style-src": ("'unsafe-inline'",),
    "frame-ancestors": ("'none'",),
    "sandbox": (),
}
CREST_MAX_AGE = 24 * 3600

# What each attribute carries, for people; its keys are checked against
# idp.saml.registry.RELEASABLE by the tests.
ATTRIBUTE_DESCRIPTIONS = {
    "uid": _(
        "An opaque, stable reference to the account, different at every "
        "service (never the identity card number)"
    ),
    "displayName": _("Full name"),
    "mail": _("Email address"),
    "mobile": _("Mobile number, in international (E.164) form"),
    "employeeType": _(
        "User category: student, parent, educator, agency, "
        "private_institution or public"
    ),
    "o": _("Institution"),
    "preferredLanguage": _("Preferred language: ms or en"),
    "isMemberOf": _("The user's roles, one value each"),
    "schacPersonalUniqueID": _(
        "The MyKad or passport number; only when the service's policy releases it"
    ),
    "subject-id": _("OASIS subject identifier: the same at every service"),
    "pairwise-id": _("OASIS pairwise identifier: different at each service"),
}
BINDING_NAMES = {
    "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect": "HTTP-Redirect",
    "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST": "HTTP-POST",
}


def _fingerprint(hex_digest: str) -> str:
    """``ab12...`` as ``AB:12:...``, the way certificate tools print it."""
    upper = hex_digest.upper()
    return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))


@view_config(route_name="pages.privacy", renderer="pages/privacy.jinja2")
def privacy(request):
    settings = request.registry.settings
    locale = request.locale_name
    controller = _in_language(settings, "idp.privacy.controller", locale)
    return {
        "controller": controller
        or _in_language(settings, "idp.organization.display_name", locale)
        or settings["idp.organization.name"],
        "email": settings["idp.privacy.email"] or settings["idp.helpdesk.email"],
        "address": settings["idp.privacy.address"] or settings["idp.helpdesk.address"],
        "session_hours": settings["idp.session_max_seconds"] // 3600,
        "idle_minutes": settings["idp.session_idle_seconds"] // 60,
        "temporary_password_hours": settings["idp.temporary_password_hours"],
        "reset_minutes": int(RESET_LIFETIME.total_seconds()) // 60,
    }


@view_config(route_name="pages.security", renderer="pages/security.jinja2")
def security(request):
    settings = request.registry.settings
    return {
        "contact_name": settings["idp.contact.security.name"],
        "contact_email": settings["idp.contact.security.email"]
        or settings["idp.helpdesk.email"],
    }


@view_config(route_name="pages.accessibility", renderer="pages/accessibility.jinja2")
def accessibility(request):
    settings = request.registry.settings
    return {"helpdesk": helpdesk_details(settings, request.locale_name)}


@view_config(route_name="pages.helpdesk", renderer="pages/helpdesk.jinja2")
def helpdesk(request):
    settings = request.registry.settings
    return {"helpdesk": helpdesk_details(settings, request.locale_name)}


@view_config(route_name="pages.developers", renderer="pages/developers.jinja2")
def developers(request):
    settings = request.registry.settings
    keyset = request.registry["idp.keys"].load(request.dbsession)
    keypair = keyset.current.pair
    certificate = keypair.certificate
    upcoming = keyset.next
    services = endpoints(settings["idp.base_url"])
    uris = attribute_uri_names()
    return {
        "metadata_url": request.route_url("saml.metadata"),
        "entity_id": settings["idp.entity_id"],
        "sso": [
            (url, BINDING_NAMES[b], b) for url, b in services["single_sign_on_service"]
        ],
        "slo": [
            (url, BINDING_NAMES[b], b) for url, b in services["single_logout_service"]
        ],
        "fingerprint": _fingerprint(keypair.fingerprint),
        "certificate_expires": certificate.not_valid_after_utc.date().isoformat(),
        # During a key rollover: the key published to sign next, for
        # integrators who configure a fingerprint rather than fetch metadata.
        "next_fingerprint": _fingerprint(upcoming.fingerprint) if upcoming else None,
        "name_id_formats": NAMEID_FORMATS,
        "attributes": [
            (friendly, uri, ATTRIBUTE_DESCRIPTIONS[friendly])
            for friendly, uri in uris.items()
        ],
        "default_release": DEFAULT_RELEASE,
        "contact_name": settings["idp.contact.technical.name"],
        "contact_email": settings["idp.contact.technical.email"]
        or settings["idp.helpdesk.email"],
    }


@view_config(route_name="pages.crest")
def crest(request):
    """The operator's crest file, when ``idp.crest.path`` names one."""
    configured = request.registry.settings["idp.crest"]
    if configured is None or configured.data is None:
        raise HTTPNotFound()
    request.csp = ContentSecurityPolicy(CREST_POLICY)
    response = request.response
    response.body = configured.data
    # Set whole: the content_type setter would add the page's charset.
    response.headers["Content-Type"] = configured.content_type
    response.cache_control.public = True
    response.cache_control.max_age = CREST_MAX_AGE
    response.etag = configured.etag
    response.conditional_response = True
    return response
