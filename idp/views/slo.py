"""Single logout pages; the protocol work is in ``idp/saml/slo.py``.

* ``/saml/slo/redirect`` and ``/saml/slo/post`` receive an SP's
  LogoutRequest (a logout starts) or LogoutResponse (one service answered,
  inside a frame of the status page).
* ``/saml/slo/next?leg=`` sends one service its LogoutRequest (the frame's
  first stop).
* ``/saml/slo/done?f=`` is the status page: a line per service, the frames
  that tell them, a refresh until every service has answered or the
  deadline passed, and finally the answer to the service that started it.
"""

from __future__ import annotations

import secrets

from pyramid.httpexceptions import HTTPSeeOther
from pyramid.view import view_config

from idp import metrics
from idp.i18n import _
from idp.redirects import origin
from idp.saml import requests as saml_requests
from idp.saml import slo
from idp.saml.errors import SamlRefused
from idp.saml.sso import service_name
from idp.security import forget_identity
from idp.services.interfaces import IAuditLog
from idp.views.saml import (
    endpoint_url,
    no_store,
    refused,
    render_to_response,
    saml_server,
)

LEG_LABELS = {
    slo.PENDING: _("Signing out…"),
    slo.SENT: _("Signing out…"),
    slo.DONE: _("Signed out"),
    slo.FAILED: _("Could not sign out"),
    slo.TIMED_OUT: _("No answer"),
}


def _framable(request) -> None:
    """Pages shown inside the status page's frames."""
    request.response.headers["X-Frame-Options"] = "SAMEORIGIN"
    request.csp.allow_framing_by_self()


def _received(request, field: str):
    if request.method == "POST":
        return saml_requests.from_post(request.POST, field)
    return saml_requests.from_redirect(request.query_string, field)


def _carry(request, outgoing, *, framed: bool = False):
    """Send the browser on with a message: 303, or a self-submitting form."""
    if outgoing.binding == saml_requests.BINDING_REDIRECT:
        return HTTPSeeOther(outgoing.url)
    nonce = secrets.token_urlsafe(16)
    request.csp.add("form-action", origin(outgoing.url))
    request.csp.add("script-src", f"'nonce-{nonce}'")
    if framed:
        _framable(request)
    no_store(request)
    return render_to_response(
        "saml/logout_post.jinja2",
        {"url": outgoing.url, "fields": outgoing.fields, "nonce": nonce},
        request,
    )


@view_config(route_name="saml.slo.redirect", require_methods=["GET", "HEAD"])
@view_config(route_name="saml.slo.post", require_methods=["POST"], require_csrf=False)
def single_logout(request):
    route = request.matched_route.name
    params = request.POST if request.method == "POST" else request.GET
    try:
        if "SAMLResponse" in params:
            return _logout_response(request, route)
        return _logout_request(request, route)
    except SamlRefused as exc:
        metrics.slo_outcome("refused")
        return refused(request, exc)


def _logout_request(request, route: str):
    dbsession = request.dbsession
    settings = request.registry.settings
    incoming = slo.receive_logout_request(
        dbsession,
        _received(request, "SAMLRequest"),
        destination=endpoint_url(request, route),
        settings=settings,
    )
    sessions = slo.sessions_named(dbsession, incoming)
    server = saml_server(request)
    if not sessions:
        # SAML-26: nothing matches what this SP was sent; no one is logged out.
        outgoing = slo.answer(
            server,
            incoming.sp,
            incoming.id,
            incoming.relay_state,
            slo.UNKNOWN_PRINCIPAL,
        )
        if outgoing is None:
            raise SamlRefused("saml_logout_expired", "SP has no SLO endpoint")
        metrics.slo_outcome("unknown_principal")
        return _carry(request, outgoing)
    own = request.session.row
    keep = own if own is not None and own in sessions else None
    user_id = next((s.user_id for s in sessions if s.user_id), None)
    token = slo.start(
        dbsession, sessions, settings=settings, initiator=incoming, keep=keep
    )
    metrics.slo_outcome("started")
    request.service(IAuditLog).record(
        "logout",
        subject_user_id=user_id,
        client_address=request.client_addr,
        detail={"by": incoming.sp.entity_id},
    )
    if keep is not None:
        request.session.invalidate()
        forget_identity(request)
    return HTTPSeeOther(request.route_path("saml.slo.done", _query={"f": token}))


def _logout_response(request, route: str):
    leg = slo.receive_logout_response(
        request.dbsession,
        _received(request, "SAMLResponse"),
        destination=endpoint_url(request, route),
        settings=request.registry.settings,
    )
    metrics.slo_outcome("leg_done" if leg.status == slo.DONE else "leg_failed")
    return _leg_page(request, leg)


def _leg_page(request, leg):
    """One service's outcome, shown inside its frame of the status page."""
    _framable(request)
    no_store(request)
    return render_to_response(
        "saml/logout_leg.jinja2",
        {
            "service": service_name(leg.sp, request.locale_name),
            "label": LEG_LABELS[leg.status],
            "status": leg.status,
        },
        request,
    )


@view_config(route_name="saml.slo.next", require_methods=["GET", "HEAD"])
def next_leg(request):
    """A frame's first stop: carry one service its LogoutRequest."""
    try:
        leg, outgoing = slo.leg_request(
            request.dbsession,
            saml_server(request),
            request.GET.get("leg", ""),
            request.registry.settings,
        )
    except SamlRefused as exc:
        _framable(request)
        return refused(request, exc)
    if outgoing is None:
        return _leg_page(request, leg)
    return _carry(request, outgoing, framed=True)


@view_config(
    route_name="saml.slo.done",
    renderer="saml/logout.jinja2",
    require_methods=["GET", "HEAD"],
)
def done(request):
    """The status page: one line per service, until all have answered."""
    dbsession = request.dbsession
    try:
        flow = slo.find_flow(dbsession, request.GET.get("f", ""))
    except SamlRefused as exc:
        return refused(request, exc)
    finished = slo.settle(flow)
    tokens = {} if finished else slo.leg_tokens(dbsession, flow)
    request.response.headers["Referrer-Policy"] = "no-referrer"
    no_store(request)
    frames = slo.origins(flow)
    if frames:
        request.csp.add("frame-src", *frames)
    continuation = None
    nonce = secrets.token_urlsafe(16)
    if finished and flow.initiator_sp_id is not None:
        initiator = flow.initiator
        continuation = slo.answer(
            saml_server(request),
            initiator,
            flow.initiator_request_id,
            flow.relay_state,
            slo.flow_status(flow),
        )
        if continuation is not None:
            request.csp.add("form-action", origin(continuation.url))
            request.csp.add("script-src", f"'nonce-{nonce}'")
    return {
        "legs": [
            {
                "id": leg.id,
                "service": service_name(leg.sp, request.locale_name),
                "status": leg.status,
                "label": LEG_LABELS[leg.status],
                "frame": (
                    request.route_path("saml.slo.next", _query={"leg": tokens[leg.id]})
                    if leg.id in tokens
                    else None
                ),
            }
            for leg in flow.legs
        ],
        "finished": finished,
        "refresh": 2,
        "continuation": continuation,
        "initiator": (
            service_name(flow.initiator, request.locale_name)
            if flow.initiator_sp_id is not None and flow.initiator is not None
            else None
        ),
        "nonce": nonce,
        "redirect_binding": saml_requests.BINDING_REDIRECT,
    }
