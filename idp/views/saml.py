"""SAML endpoints; the protocol work happens in ``idp/saml/``.

Single sign-on:

* ``/saml/sso/redirect`` (GET): a signed-in user is answered at once;
  anyone else signs in first, the request parked server-side.
* ``/saml/sso/post`` (POST, cross-site, so no CSRF token and no session
  cookie): the request is checked, parked, and continued by a 303 to
  ``/saml/sso/continue`` on this site, where the SameSite=Lax cookie is sent.
* ``/saml/init/{sp}`` (GET): IdP-initiated SSO, from the module portal.

Someone signed in with a temporary password must choose their own first
(AUTH-13): these views park the request (or keep the portal link) as the
change form's continuation and send them there; the change form then comes
back here, and the service gets its Response right after the change.

A refused request gets a bilingual page with a stable code and a reference;
when the request's ACS is trusted, the page also carries a signed SAML error
Response back to the service. IsPassive never shows a page.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from urllib.parse import parse_qs

from pyramid.httpexceptions import HTTPNotFound, HTTPSeeOther
from pyramid.renderers import render_to_response as render
from pyramid.response import Response
from pyramid.view import view_config

from idp.i18n import _, translate_in
from idp.models import ServiceProvider
from idp.redirects import origin
from idp.saml import requests as saml_requests
from idp.saml import sso
from idp.saml.errors import STATUS_NO_PASSIVE, STATUS_RESPONDER, SamlRefused
from idp.saml.metadata import MEDIA_TYPE
from idp.security import keep_continuation
from idp.services.interfaces import IAuditLog
from idp.tweens import content_security_policy
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
    extra = {"form-action": [origin(acs_url)]}
    if nonce:
        extra["script-src"] = [f"'nonce-{nonce}'"]
    request.response.headers["Content-Security-Policy"] = content_security_policy(extra)


def post_form(request, reply, saml_response: str, *, status: int = 200):
    """The HTTP-POST binding page: auto-submitted, with a visible button."""
    nonce = secrets.token_urlsafe(16)
    no_store(request)
    _post_policy(request, reply.acs_url, nonce)
    request.response.status_int = status
    return render_to_response(
        "saml/post.jinja2",
        {
            "acs_url": reply.acs_url,
            "saml_response": saml_response,
            "relay_state": reply.relay_state,
            "nonce": nonce,
        },
        request,
    )


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


def _login_then(request, token: str):
    next_url = request.route_path("saml.sso.continue", _query={"r": token})
    return HTTPSeeOther(
        request.route_path("login.identifier", _query={"next": next_url})
    )


def _audit(request, event: str, user, detail: dict) -> None:
    request.find_service(IAuditLog, context=None).record(
        event,
        subject_user_id=user.id if user is not None else None,
        client_address=request.client_addr,
        detail=detail,
    )


def _no_access(service: str):
    return _(
        "Your roles in idMe do not give you access to ${service}. "
        "If you need it, ask your institution's administrator.",
        mapping={"service": service},
    )


def _deliver(request, user, sp: ServiceProvider, reply, authn, token):
    """Role gate, then the Response (SAML-31, SAML-32)."""
    dbsession = request.dbsession
    settings = request.registry.settings
    if user.must_change_password:
        # AUTH-13, behind the gate in idp/security.py: never an assertion
        # before the new password is set.
        return HTTPSeeOther(request.route_path("password.new"))
    if not sp.enabled:
        sso.finish(dbsession, token)
        return refused(request, SamlRefused("saml_sp_disabled", status=403))
    access = sso.may_reach(dbsession, user, sp)
    if not access:
        sso.finish(dbsession, token)
        _audit(
            request,
            "saml.sso.refused",
            user,
            {"sp": sp.entity_id, "reason": "no role grants the SP's module"},
        )
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
    session_row = request.session.row
    try:
        saml_response = sso.assertion_for(
            dbsession,
            saml_server(request),
            user=user,
            session_row=session_row,
            sp=sp,
            reply=reply,
            request=authn,
            roles=access.roles,
            settings=settings,
        )
    except SamlRefused as exc:
        sso.finish(dbsession, token)
        return refused(request, exc)
    if not sso.finish(dbsession, token):
        return refused(request, SamlRefused("saml_expired", "answered twice"))
    return post_form(request, reply, saml_response)


def _no_passive(request, authn, token):
    """IsPassive: never a page of ours; straight back with NoPassive."""
    sso.finish(request.dbsession, token)
    no_passive = (STATUS_RESPONDER, STATUS_NO_PASSIVE)
    response = sso.error_response(saml_server(request), authn.reply(), no_passive)
    return post_form(request, authn.reply(), response)


def _park(request, authn, token, received) -> str:
    if token is not None:
        return token
    return sso.park(
        request.dbsession,
        authn,
        received.xml,
        received.binding,
        request.registry.settings,
    )


def _change_first(request, authn, *, token, received, fresh_enough: bool):
    """The user must choose a new password first; the request waits for it.

    Parked, and kept in the session as the continuation of the change form,
    which answers it once the password is set (issue 12 item 1); until then
    nothing is sent (AUTH-13). IsPassive cannot wait for a page: NoPassive.
    A ForceAuthn request that arrived after the temporary password was typed
    goes through the sign-in again: choosing a new password in a session
    that already existed proves nothing new about who holds it.
    """
    if authn.is_passive:
        return _no_passive(request, authn, token)
    token = _park(request, authn, token, received)
    continuation = request.route_path("saml.sso.continue", _query={"r": token})
    if not fresh_enough:
        continuation = request.route_path(
            "login.identifier", _query={"next": continuation}
        )
    keep_continuation(request, continuation)
    return HTTPSeeOther(request.route_path("password.new"))


def _sso(request, authn, *, token, arrived_at, received=None):
    """Answer a checked AuthnRequest, or sign the user in first."""
    user = request.identity
    authn_at = request.session.authn_at if user is not None else None
    fresh_enough = not authn.force_authn or (
        authn_at is not None and authn_at >= arrived_at
    )
    if user is not None and user.must_change_password:
        return _change_first(
            request, authn, token=token, received=received, fresh_enough=fresh_enough
        )
    if user is None or not fresh_enough:
        if authn.is_passive:
            return _no_passive(request, authn, token)
        return _login_then(request, _park(request, authn, token, received))
    sp = authn.sp or request.dbsession.get(ServiceProvider, authn.sp_id)
    return _deliver(request, user, sp, authn.reply(), authn, token)


@view_config(route_name="saml.sso.redirect", require_methods=["GET", "HEAD"])
def sso_redirect(request):
    now = dt.datetime.now(dt.UTC)
    try:
        received = saml_requests.from_redirect(request.query_string)
        authn = saml_requests.receive_authn_request(
            request.dbsession,
            received,
            destination=endpoint_url(request, "saml.sso.redirect"),
            settings=request.registry.settings,
        )
    except SamlRefused as exc:
        return refused(request, exc)
    return _sso(request, authn, token=None, arrived_at=now, received=received)


@view_config(route_name="saml.sso.post", require_methods=["POST"], require_csrf=False)
def sso_post(request):
    """Cross-site POST from the SP: check, park, continue on this site."""
    settings = request.registry.settings
    try:
        received = saml_requests.from_post(request.POST)
        authn = saml_requests.receive_authn_request(
            request.dbsession,
            received,
            destination=endpoint_url(request, "saml.sso.post"),
            settings=settings,
        )
    except SamlRefused as exc:
        return refused(request, exc)
    token = sso.park(request.dbsession, authn, received.xml, received.binding, settings)
    return HTTPSeeOther(request.route_path("saml.sso.continue", _query={"r": token}))


@view_config(route_name="saml.sso.continue", require_methods=["GET", "HEAD"])
def sso_continue(request):
    try:
        resumed = sso.resume(
            request.dbsession, request.GET.get("r", ""), request.registry.settings
        )
    except SamlRefused as exc:
        return refused(request, exc)
    request.response.headers["Referrer-Policy"] = "no-referrer"
    return _sso(
        request, resumed.request, token=resumed.token, arrived_at=resumed.arrived_at
    )


@view_config(route_name="saml.init", require_methods=["GET", "HEAD"])
def init(request):
    """IdP-initiated SSO to one SP (the portal's links), with RelayState."""
    raw = request.matchdict["sp"]
    if not raw.isdigit() or len(raw) > 12:
        raise HTTPNotFound()
    sp = request.dbsession.get(ServiceProvider, int(raw))
    if sp is None:
        raise HTTPNotFound()
    relay_states = request.GET.getall("RelayState")
    try:
        if len(relay_states) > 1:
            raise SamlRefused("saml_bad_message", "RelayState given twice")
        # The same rule as the SP-initiated endpoints (SAML-22/23): a link
        # anyone can craft is no more trusted than an SP's request.
        relay_state = saml_requests.relay_state_rule(
            relay_states[0] if relay_states else None, sp.relay_state_max
        )
        if not sp.enabled:
            raise SamlRefused("saml_sp_disabled", sp.entity_id, status=403)
        reply = sso.idp_initiated_reply(sp, relay_state)
    except SamlRefused as exc:
        return refused(request, exc)
    user = request.identity
    if user is None:
        return HTTPSeeOther(
            request.route_path("login.identifier", _query={"next": request.path_qs})
        )
    if user.must_change_password:
        # The same link, followed once the new password is set (AUTH-13).
        keep_continuation(request, request.path_qs)
        return HTTPSeeOther(request.route_path("password.new"))
    return _deliver(request, user, sp, reply, None, None)


@view_config(route_name="saml.metadata")
def metadata(request):
    request.tm.doom()
    settings = request.registry.settings
    response = Response(
        body=request.registry["idp.metadata"].get(),
        content_type=MEDIA_TYPE,
        charset="utf-8",
    )
    response.cache_control.public = True
    response.cache_control.max_age = settings["idp.metadata_cache_seconds"]
    response.content_disposition = 'inline; filename="idp-metadata.xml"'
    return response
