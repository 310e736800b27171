"""SAML endpoints; the protocol work happens in ``idp/saml/``.

Single sign-on:

* ``/saml/sso/redirect`` (GET): a signed-in user is answered at once;
  anyone else signs in first, the request parked server-side.
* ``/saml/sso/post`` (POST, cross-site, so no CSRF token and no session
  cookie): the request is checked, parked, and continued by a 303 to
  ``/saml/sso/continue`` on this site, where the SameSite=Lax cookie is sent.
* ``/saml/init/{sp}`` (GET): IdP-initiated SSO, from the module portal.

Each view turns what arrived into a checked start and renders the one
answer :func:`idp.saml.sso.answer` gives it (:func:`render_answer`); what
happens (sign in first, a new password first, no access, the Response) is
decided there, not here. Someone signed in with a temporary password must
choose their own first (AUTH-13): the request is parked (or the portal link
kept) as the change form's continuation, which comes back here, and the
service gets its Response right after the change.

A refused request gets a bilingual page with a stable code and a reference;
when the request's ACS is trusted, the page also carries a signed SAML error
Response back to the service. IsPassive never shows a page.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import assert_never
from urllib.parse import parse_qs

from markupsafe import escape
from pyramid.httpexceptions import HTTPNotFound, HTTPSeeOther
from pyramid.renderers import render_to_response as render
from pyramid.response import Response
from pyramid.view import view_config
from pyramid_jinja2 import IJinja2Environment

from idp import metrics
from idp.i18n import _, translate_in
from idp.models import ServiceProvider
from idp.redirects import origin
from idp.saml import sso
from idp.saml.errors import SamlRefused
from idp.saml.mdq import Discovery
from idp.saml.metadata import MEDIA_TYPE
from idp.saml.partners import find_partner, mdq_asks_for, record_fetch
from idp.security import keep_continuation
from idp.services.interfaces import IAuditLog, IRateLimiter
from idp.views.errors import render_error

log = logging.getLogger(__name__)

_TRY_AGAIN = _(
    "Go back to the service and start again. If it keeps happening, contact "
    "the service's helpdesk and quote the reference below."
)

# code -> (title, explanation); the HTTP status comes with the refusal.
PAGES = {
    "saml_no_message": (
        _("No sign-in request"),
        _(
            "This address is used by services to ask idMe to sign you in. "
            "Open the service you want to use and sign in from there."
        ),
    ),
    "saml_bad_message": (_("The sign-in request could not be read"), _TRY_AGAIN),
    "saml_too_large": (_("The sign-in request is too large"), _TRY_AGAIN),
    "saml_relay_state": (_("The sign-in request carries too much data"), _TRY_AGAIN),
    "saml_unknown_sp": (
        _("Unknown service"),
        _(
            "The service that sent you here is not registered with idMe, so idMe "
            "will not sign you in to it. Check the address of the service."
        ),
    ),
    "saml_sp_disabled": (
        _("This service is not available"),
        _(
            "Signing in to this service through idMe is switched off for now. "
            "Please try again later or contact the service's helpdesk."
        ),
    ),
    "saml_sp_expired": (
        _("This service is not available"),
        _(
            "The registration of this service with idMe has expired. "
            "Please contact the service's helpdesk."
        ),
    ),
    "saml_bad_signature": (_("The sign-in request could not be verified"), _TRY_AGAIN),
    "saml_signature_required": (
        _("The sign-in request could not be verified"),
        _TRY_AGAIN,
    ),
    "saml_destination": (
        _("The sign-in request was sent to the wrong address"),
        _TRY_AGAIN,
    ),
    "saml_stale": (_("The sign-in request has expired"), _TRY_AGAIN),
    "saml_replay": (_("This sign-in request was already used"), _TRY_AGAIN),
    "saml_acs": (
        _("The service's return address is not registered"),
        _(
            "The service asked idMe to send you to an address it has not "
            "registered, so idMe will not sign you in to it."
        ),
    ),
    "saml_expired": (
        _("This sign-in is finished or has expired"),
        _("Go back to the service and start again."),
    ),
    "saml_logout_expired": (
        _("This sign-out is finished or has expired"),
        _(
            "You are signed out of idMe. Close the browser to be sure you are "
            "signed out of every service."
        ),
    ),
    "saml_no_authn_context": (
        _("This service asks for a sign-in method idMe does not offer"),
        _("You can return to the service; it will tell you what to do next."),
    ),
    "saml_name_id_policy": (
        _("This service asks for an identifier idMe does not release to it"),
        _("You can return to the service; it will tell you what to do next."),
    ),
}


def endpoint_url(request, route: str) -> str:
    """The absolute URL a message must name as its Destination."""
    return request.registry.settings["idp.base_url"] + request.route_path(route)


def saml_server(request):
    return request.registry["idp.saml.servers"].get(request.dbsession)


def no_store(request) -> None:
    request.response.cache_control.no_store = True
    request.response.headers["Pragma"] = "no-cache"


def _post_policy(request, acs_url: str, nonce: str | None = None) -> None:
    """This page may post to the SP's ACS (and run its own nonce'd script)."""
    request.csp.add("form-action", origin(acs_url))
    if nonce:
        request.csp.add("script-src", f"'nonce-{nonce}'")


def post_form(request, reply, saml_response: str, *, status: int = 200):
    """The HTTP-POST binding page: auto-submitted, with a visible button."""
    nonce = secrets.token_urlsafe(16)
    no_store(request)
    _post_policy(request, reply.acs_url, nonce)
    response = request.response
    response.status_int = status
    response.text = _post_page(request, reply.relay_state is not None).fill(
        acs_url=reply.acs_url,
        saml_response=saml_response,
        relay_state=reply.relay_state,
        nonce=nonce,
    )
    return response


# Stand-ins for the page's values while it is rendered once: NUL is in no
# template or translation, and Jinja2's escaping leaves it as it is.
_SLOT = re.compile("\x00(acs_url|saml_response|relay_state|nonce)\x00")
_POST_PAGES = "idp.saml.post_pages"


class _PostPage:
    """The POST page of one language, rendered once with stand-ins.

    Rendered on every SSO, and the same but for four values: the template
    runs once per language (and script name, and with or without a
    RelayState) and :meth:`fill` puts the values in, escaped as Jinja2's
    autoescape would (``markupsafe.escape``). Straight from the Jinja2
    environment: Pyramid's renderer would first look for the template
    relative to this package (a miss and an exception each time) and run
    ``BeforeRender`` subscribers for globals the page does not use.
    """

    def __init__(self, request, with_relay_state: bool) -> None:
        environment = request.registry.getUtility(IJinja2Environment, name=".jinja2")
        page = environment.get_template("saml/post.jinja2").render(
            request=request,
            **{
                name: f"\x00{name}\x00"
                for name in ("acs_url", "saml_response", "nonce")
            },
            relay_state="\x00relay_state\x00" if with_relay_state else None,
        )
        self._parts = _SLOT.split(page)

    def fill(self, **values: str | None) -> str:
        parts = self._parts
        return "".join(
            [
                part if i % 2 == 0 else str(escape(values[part]))
                for i, part in enumerate(parts)
            ]
        )


def _post_page(request, with_relay_state: bool) -> _PostPage:
    pages = request.registry.get(_POST_PAGES)
    if pages is None:
        pages = request.registry[_POST_PAGES] = {}
    key = (request.locale_name, request.script_name, with_relay_state)
    page = pages.get(key)
    if page is None:
        page = _PostPage(request, with_relay_state)
        if not request.registry.settings.get("pyramid.reload_templates"):
            pages[key] = page  # developing templates: each page rendered anew
    return page


def render_to_response(renderer: str, values: dict, request):
    return render(renderer, values, request=request, response=request.response)


def refused(request, exc: SamlRefused):
    """The page for a refused message; with a SAML error Response if trusted."""
    page = PAGES.get(exc.code, PAGES["saml_bad_message"])
    reference, values = render_error(request, exc.status, (exc.code, *page))
    log.info(
        "SAML refused %s %s: %s [%s]", request.method, request.path, exc, reference
    )
    no_store(request)
    values["reply"] = None
    if exc.reply is not None and exc.reply.acs_url:
        values["reply"] = exc.reply
        values["saml_response"] = sso.error_response(
            saml_server(request), exc.reply, exc.saml_status, exc.code
        )
        _post_policy(request, exc.reply.acs_url)
    return render_to_response("saml/error.jinja2", values, request)


def continuation_waits(request, url: str) -> bool:
    """Whether a continuation kept for after a password change can still go on.

    A parked request's continuation (directly or through the sign-in page)
    is answerable only until it expires (``idp.saml.pending_seconds``) or is
    used; anything else (a portal link, a page of idMe) always can.
    """
    path, _, query = url.partition("?")
    if path == request.route_path("login.identifier"):
        path, _, query = parse_qs(query).get("next", [""])[0].partition("?")
    if path != request.route_path("saml.sso.continue"):
        return True
    return sso.is_waiting(request.dbsession, parse_qs(query).get("r", [""])[0])


def _no_access(service: str):
    return _(
        "Your roles in idMe do not give you access to ${service}. "
        "If you need it, ask your institution's administrator.",
        mapping={"service": service},
    )


def no_access_page(request, sp: ServiceProvider):
    """No role grants the SP's module (SAML-32): say so, naming the service."""
    name = sso.service_name(sp, request.locale_name)
    _reference, values = render_error(
        request,
        403,
        ("saml_no_access", _("No access to this service"), _no_access(name)),
    )
    # The second language names the service in that language too.
    second = values["second_locale"]
    values["second_explanation"] = translate_in(
        request, _no_access(sso.service_name(sp, second)), second
    )
    values["service"] = name
    no_store(request)
    return render_to_response("saml/no_access.jinja2", values, request)


def _continuation(request, answer: sso.Answer) -> str:
    """Where a waiting start goes on: its parked request, or the same link."""
    if answer.token is None:
        return request.path_qs
    return request.route_path("saml.sso.continue", _query={"r": answer.token})


def _through_sign_in(request, next_url: str) -> str:
    return request.route_path("login.identifier", _query={"next": next_url})


def render_answer(request, answer: sso.Answer):
    """The page or redirect for single sign-on's answer; nothing is decided here."""
    match answer.outcome:
        case sso.Outcome.ASSERTION | sso.Outcome.NO_PASSIVE:
            return post_form(request, answer.reply, answer.saml_response)
        case sso.Outcome.REFUSED:
            return refused(request, answer.refusal)
        case sso.Outcome.NO_ACCESS:
            return no_access_page(request, answer.sp)
        case sso.Outcome.CONTINUE:
            return HTTPSeeOther(_continuation(request, answer))
        case sso.Outcome.SIGN_IN:
            return HTTPSeeOther(
                _through_sign_in(request, _continuation(request, answer))
            )
        case sso.Outcome.CHANGE_PASSWORD:
            # The change form goes on here once the new password is set.
            continuation = _continuation(request, answer)
            if answer.reauthenticate:
                continuation = _through_sign_in(request, continuation)
            keep_continuation(request, continuation)
            return HTTPSeeOther(request.route_path("password.new"))
        case unknown:
            assert_never(unknown)


def _signed_in(request) -> sso.SignedIn | None:
    user = request.identity
    if user is None:
        return None
    return sso.SignedIn(user, request.session.row, request.session.authn_at)


def _answer(request, start: sso.Start):
    """Single sign-on's answer to ``start``, rendered."""
    answer = sso.answer(
        request.dbsession,
        start,
        lambda: _signed_in(request),
        servers=request.registry["idp.saml.servers"],
        audit=lambda: request.service(IAuditLog),
        address=request.client_addr,
        settings=request.registry.settings,
        tally=request.registry["idp.saml.tally"],
    )
    # The SP comes from the registry (start.sp), never from the message.
    sp = answer.sp or start.sp
    metrics.sso_answered(
        sp.entity_id if sp is not None else None,
        answer.outcome.value,
        by_sp=request.registry.settings["idp.metrics_sso_by_sp"],
    )
    return render_answer(request, answer)


def _start_refused(request, exc: SamlRefused):
    """A message refused before any SP was trusted: counted as sp="unknown",
    since its issuer may be anything a client made up."""
    metrics.sso_answered(
        None,
        sso.Outcome.REFUSED.value,
        by_sp=request.registry.settings["idp.metrics_sso_by_sp"],
    )
    return refused(request, exc)


def _discovery(request):
    """Looks up an unknown issuer at the MDQ sources, within their limits.

    Built at the first unknown issuer only: an SSO from a registered SP
    (nearly every one) asks for no rate limiter.
    """

    def discover(entity_id: str):
        return Discovery(
            request.dbsession,
            request.registry.settings,
            request.service(IRateLimiter),
            request.client_addr,
        )(entity_id)

    return discover


@view_config(route_name="saml.sso.redirect", require_methods=["GET", "HEAD"])
def sso_redirect(request):
    try:
        start = sso.redirected(
            request.dbsession,
            request.query_string,
            destination=endpoint_url(request, "saml.sso.redirect"),
            settings=request.registry.settings,
            discover=_discovery(request),
        )
    except SamlRefused as exc:
        return _start_refused(request, exc)
    return _answer(request, start)


@view_config(route_name="saml.sso.post", require_methods=["POST"], require_csrf=False)
def sso_post(request):
    """Cross-site POST from the SP: check, park, continue on this site."""
    try:
        start = sso.posted(
            request.dbsession,
            request.POST,
            destination=endpoint_url(request, "saml.sso.post"),
            settings=request.registry.settings,
            discover=_discovery(request),
        )
    except SamlRefused as exc:
        return _start_refused(request, exc)
    return _answer(request, start)


@view_config(route_name="saml.sso.continue", require_methods=["GET", "HEAD"])
def sso_continue(request):
    try:
        start = sso.resume(
            request.dbsession, request.GET.get("r", ""), request.registry.settings
        )
    except SamlRefused as exc:
        return _start_refused(request, exc)
    request.response.headers["Referrer-Policy"] = "no-referrer"
    return _answer(request, start)


@view_config(route_name="saml.init", require_methods=["GET", "HEAD"])
def init(request):
    """IdP-initiated SSO to one SP (the portal's links), with RelayState."""
    try:
        start = sso.idp_initiated(
            request.dbsession, request.matchdict["sp"], request.GET.getall("RelayState")
        )
    except SamlRefused as exc:
        return _start_refused(request, exc)
    if start is None:
        raise HTTPNotFound()
    return _answer(request, start)


def _metadata_response(request, endpoint: str, partner: str | None) -> Response:
    """idMe's signed metadata, its fetch noted for ``keys rollover status``."""
    settings = request.registry.settings
    body = request.registry["idp.metadata"].get(request.dbsession)
    record_fetch(
        request.dbsession,
        endpoint=endpoint,
        client_address=request.client_addr or "",
        user_agent=request.user_agent or "",
        sp_entity_id=partner,
    )
    response = Response(body=body, content_type=MEDIA_TYPE, charset="utf-8")
    response.cache_control.public = True
    response.cache_control.max_age = settings["idp.metadata_cache_seconds"]
    response.content_disposition = 'inline; filename="idp-metadata.xml"'
    return response


def _partner(request, token: str | None) -> str | None:
    """The SP a per-partner URL's token names; 404 for a token that names none.

    A wrong token is refused rather than served unattributed, so a partner
    who mistyped its URL finds out, and nobody can count as a partner.
    """
    if token is None:
        return None
    partner = find_partner(
        request.dbsession, request.registry.settings["idp.hmac_key"], token
    )
    if partner is None:
        raise HTTPNotFound()
    return partner


@view_config(route_name="saml.metadata", require_methods=["GET", "HEAD"])
def metadata(request):
    partner = _partner(request, request.GET.get("sp"))
    return _metadata_response(request, "metadata", partner)


@view_config(route_name="saml.mdq", require_methods=["GET", "HEAD"])
@view_config(route_name="saml.mdq_partner", require_methods=["GET", "HEAD"])
def mdq(request):
    """MDQ for idMe's own entity only: by its entity ID or ``{sha1}<hex>``."""
    partner = _partner(request, request.matchdict.get("token"))
    entity_id = request.registry.settings["idp.entity_id"]
    if not mdq_asks_for(request.matchdict["id"], entity_id):
        raise HTTPNotFound()
    return _metadata_response(request, "mdq", partner)
