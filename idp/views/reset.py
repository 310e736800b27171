"""Forgot password: "Lupa Kata Laluan", as idMe does it.

1. ``/password/forgot``: the email and the captcha. The answer is always the
   same 303 to ``/password/forgot/sent``, registered or not, rate limited or
   not (AUTH-04), after the same work (AUTH-28): the request only queues a
   job; the delivery worker finds the account and, only for one that is
   registered and not disabled, issues and mails the link.
2. The email holds ``<idp.base_url>/password/reset/<token>``, never a host
   taken from the request (WEB-07); only the token's hash is stored
   (:mod:`idp.services.tokens`).
3. Opening the link swaps the token for server-side state and redirects to
   the token-free ``/password/reset``, with no Referer sent (WEB-13).
4. ``/password/reset``: the email and the identity number must both be the
   link's user's (AUTH-16). A wrong pair counts against the account's sign-in
   limiter; the fifth uses the link up.
5. ``/password/reset/new``: the new password twice and the captcha. The link
   is used up with the change, every session of the user ends and a lock
   from failed sign-ins is lifted; an account disabled by the helpdesk stays
   disabled.

Where the user is in the flow lives in the session (``reset``), so the steps
cannot be skipped; the link's row is read again at every step, so a link
used, expired or voided meanwhile (AUTH-14, AUTH-15, AUTH-17) stops the flow.
"""

from __future__ import annotations

import logging

from pyramid.httpexceptions import HTTPSeeOther
from pyramid.renderers import render_to_response
from pyramid.view import view_config

from idp.forms import mark_captcha_wrong
from idp.forms.register import country_choices
from idp.forms.reset import MISMATCH, NewForm, RequestForm, VerifyForm
from idp.i18n import _
from idp.security import forget_identity
from idp.services.interfaces import (
    ICaptchaService,
    IPasswordResetService,
    IUserService,
)
from idp.views.captcha import show_challenge
from idp.views.errors import render_error

log = logging.getLogger(__name__)

STATE = "reset"
# The link's URL holds the token: nothing reached from it may see it.
NO_REFERRER = {"Referrer-Policy": "no-referrer"}
LINK_PAGE = (
    "reset_link",
    _("This link cannot be used"),
    _(
        "The password reset link is wrong, has already been used or has expired. "
        'Ask for a new link with "Forgot password" on the sign-in page.'
    ),
)


def _link_refused(request) -> dict:
    """The bilingual "this link cannot be used" page (400), for errors/error.jinja2."""
    reference, values = render_error(request, 400, LINK_PAGE, headers=NO_REFERRER)
    # The route's name, not the path: the path may hold the token.
    log.info("reset link refused at %s [%s]", request.matched_route.name, reference)
    return values


def _restart(request) -> HTTPSeeOther:
    request.session.pop(STATE, None)
    return HTTPSeeOther(request.route_path("reset.request"))


def _progress(request, *, verified: bool):
    """The link and user of the reset under way, or None to start again."""
    state = request.session.get(STATE)
    if not isinstance(state, dict) or (verified and state.get("verified") is not True):
        return None
    return request.service(IPasswordResetService).progress(state.get("token_id"))


@view_config(
    route_name="reset.request",
    renderer="reset/request.jinja2",
    require_methods=["GET", "HEAD", "POST"],
)
def request_(request):
    # The trailing underscore (PEP 8) keeps the view apart from its argument.
    if request.method != "POST":
        form = RequestForm()
        return {"form": form, **show_challenge(request, form, "reset")}
    form = RequestForm(request.POST)
    # Checked (and consumed) first, whatever the other fields say (AUTH-19).
    captcha_ok = request.service(ICaptchaService).check(
        request.POST, request.client_addr, purpose="reset"
    )
    valid = form.validate()
    if not captcha_ok:
        mark_captcha_wrong(form, request.service(ICaptchaService).kind)
    if not (valid and captcha_ok):
        request.response.status_int = 400
        return {"form": form, **show_challenge(request, form, "reset")}
    request.service(IPasswordResetService).request_link(
        form.address, client_address=request.client_addr or ""
    )
    return HTTPSeeOther(request.route_path("reset.sent"))


@view_config(route_name="reset.sent", renderer="reset/sent.jinja2")
def sent(request):
    lifetime = request.service(IPasswordResetService).lifetime
    return {"minutes": int(lifetime.total_seconds() // 60)}


@view_config(route_name="reset.link", renderer="errors/error.jinja2")
def link(request):
    """Swap the token in the URL for session state and leave the URL (WEB-13)."""
    row = request.service(IPasswordResetService).find(request.matchdict["token"])
    if row is None:
        return _link_refused(request)
    request.session[STATE] = {"token_id": str(row.id), "verified": False}
    return HTTPSeeOther(request.route_path("reset.verify"), headers=NO_REFERRER)


@view_config(
    route_name="reset.verify",
    renderer="reset/verify.jinja2",
    require_methods=["GET", "HEAD", "POST"],
)
def verify(request):
    progress = _progress(request, verified=False)
    if progress is None:
        return _restart(request)
    row, user = progress
    form = VerifyForm(request.POST if request.method == "POST" else None)
    message = None
    if request.method == "POST":
        if form.validate():
            if form.matches(user):
                request.session[STATE] = {"token_id": str(row.id), "verified": True}
                return HTTPSeeOther(request.route_path("reset.new"))
            resets = request.service(IPasswordResetService)
            if resets.mismatch(row, user, client_address=request.client_addr):
                request.session.pop(STATE, None)
                values = _link_refused(request)
                return render_to_response(
                    "errors/error.jinja2",
                    values,
                    request=request,
                    response=request.response,
                )
            message = MISMATCH
        request.response.status_int = 400
    return {
        "form": form,
        "message": message,
        "countries": country_choices(request.locale_name),
    }


@view_config(
    route_name="reset.new",
    renderer="reset/new.jinja2",
    require_methods=["GET", "HEAD", "POST"],
)
def new(request):
    progress = _progress(request, verified=True)
    if progress is None:
        return _restart(request)
    row, user = progress
    form = NewForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        captcha_ok = request.service(ICaptchaService).check(
            request.POST, request.client_addr, purpose="reset.new"
        )
        users = request.service(IUserService)
        valid = form.validate() and form.check_policy(
            users.policy_violations(user, form.password.data)
        )
        if not captcha_ok:
            mark_captcha_wrong(form, request.service(ICaptchaService).kind)
        if valid and captcha_ok:
            resets = request.service(IPasswordResetService)
            if not resets.use(row):
                return _restart(request)
            # This browser's session goes first: it may be one of the user's
            # own, which the reset is about to end with all the others.
            request.session.invalidate()
            forget_identity(request)
            resets.reset(user, form.password.data, client_address=request.client_addr)
            request.session.flash(
                _("Your password has been reset. Sign in with your new password.")
            )
            return HTTPSeeOther(request.route_path("login.identifier"))
        request.response.status_int = 400
    return {"form": form, **show_challenge(request, form, "reset.new")}
