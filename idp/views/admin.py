"""The admin console (``/admin``): its gate, home, and the steps an admin may owe.

Every page below ``/admin`` has :class:`idp.authz.AdminRoot` as its context
and needs one of the console's permissions, which that context grants only
to a user holding an admin role, in a session that passed the second
factor, and (for acts that change something) within ``REAUTH_WINDOW`` of
the sign-in or the last re-authentication. When a page is denied,
:func:`gate_response` (called by the forbidden view) says what to do:
sign in, turn two-step verification on, type a code (``admin.verify``), or
give the password again (``admin.reauthenticate``) and come back to the
act. Otherwise the 403 page: a plain user, helpdesk on a registry page, an
auditor's POST.

Every act is audited through an :class:`Actor` naming the admin and their
address (:func:`actor`).
"""

from __future__ import annotations

import logging
import uuid
from urllib.parse import urlencode

from pyramid.events import NewResponse, subscriber
from pyramid.httpexceptions import HTTPBadRequest, HTTPForbidden, HTTPSeeOther
from pyramid.renderers import render_to_response
from pyramid.view import view_config

from idp.authz import AdminRoot, AdminStep, Permission
from idp.forms.account import CurrentPasswordForm
from idp.forms.admin import ROLE_NAMES, GrantForm
from idp.forms.login import CodeForm
from idp.i18n import _
from idp.models import User
from idp.redirects import safe_next
from idp.security import forget_identity
from idp.services import admin as admin_rules
from idp.services.accounts import masked
from idp.services.actor import Actor
from idp.services.errors import NotFound, Refused
from idp.services.interfaces import (
    IAccountService,
    IAdminRoles,
    IAuditLog,
    ISignInService,
)
from idp.services.signin import AUTHN_METHOD_TWO_STEP, Outcome
from idp.services.two_factor import clock_of
from idp.views.listing import listing

log = logging.getLogger(__name__)

#: The services' refusals, in the console's words (by their stable code).
REFUSALS = {
    "admin.last_superadmin": _(
        "This is the last superadmin: the role can only be taken from them on "
        "the server, with idp-admin."
    ),
    "admin.target_is_admin": _(
        "This account holds an admin role: it can only be changed on the "
        "server, with idp-admin."
    ),
    "account.email_taken": _("Another account already has this email address."),
    "account.email_unchanged": _("This is already the account's email address."),
    "email.invalid": _("Enter an email address like name@example.com."),
}

#: ``by`` in the audit events of acts done in the console.
CONSOLE = "admin-console"

ENROL_PAGE = (
    "admin_two_step",
    _("Turn on two-step verification first"),
    _(
        "Your admin role works only once two-step verification is on for your "
        "account. Turn it on in My account, then come back to the admin "
        "console: it will ask for a code from your authenticator app."
    ),
)


@subscriber(NewResponse)
def no_store(event) -> None:
    """Nothing the console shows is kept by a browser or a proxy: HTML pages
    already are not (idp.tweens), and neither is anything else it sends."""
    route = event.request.matched_route
    if route is not None and route.name.startswith("admin."):
        event.response.headers["Cache-Control"] = "no-store"


def actor(request) -> Actor:
    """The signed-in admin at their address, for the services' audit events."""
    return Actor(CONSOLE, user_id=request.identity.id, address=request.client_addr)


def _back_to(request) -> str:
    """Where a step returns: this page, or for an act the page it was sent from.

    An act is a POST to a page that shows its form on GET, so coming back
    to its path shows the form again, for the admin to send once more.
    """
    return request.path_qs if request.method in ("GET", "HEAD") else request.path


def gate_response(exc, request):
    """The response to a denied /admin page, or None for the usual 403."""
    context = getattr(request, "context", None)
    if not isinstance(context, AdminRoot) or request.identity is None:
        return None
    result = getattr(exc, "result", None)
    step = context.step_for(getattr(result, "permission", None))
    if step is None:
        return None
    if step is AdminStep.ENROL:
        from idp.views.errors import render_error

        _reference, values = render_error(request, 403, ENROL_PAGE)
        return render_to_response(
            "admin/enrol.jinja2", values, request=request, response=request.response
        )
    route = "admin.verify" if step is AdminStep.VERIFY else "admin.reauthenticate"
    query = urlencode({"next": _back_to(request)})
    return HTTPSeeOther(f"{request.route_path(route)}?{query}")


def _next(request) -> str:
    target = safe_next(request.params.get("next"))
    if target is None or not target.startswith("/admin"):
        return request.route_path("admin.index")
    return target


def _admin_context(request) -> AdminRoot:
    """The console's context for this request (the steps' routes have the
    site's root, so they build it to know who they face)."""
    return AdminRoot(request)


def _locked_out(request, user, reason: str) -> HTTPSeeOther:
    """Too many wrong passwords or codes: lock, sign out, say why (as Akaun saya)."""
    request.session.invalidate()
    forget_identity(request)
    request.service(ISignInService).lock(
        user, reason=reason, address=request.client_addr
    )
    request.session.flash(
        _(
            "Too many wrong passwords. For your safety your account is locked "
            "and you have been signed out; we have sent you an email about it."
        )
    )
    return HTTPSeeOther(request.route_path("home"))


@view_config(
    route_name="admin.verify",
    renderer="admin/verify.jinja2",
    permission=Permission.ACCOUNT,
    require_methods=["GET", "HEAD", "POST"],
)
def verify(request):
    """The second factor, for an admin whose session was signed in without it."""
    context = _admin_context(request)
    target = _next(request)
    if not context.roles:
        raise HTTPForbidden()
    if context.verified:
        return HTTPSeeOther(target)
    if not context.enrolled:
        return HTTPSeeOther(request.route_path("account.two_step"))
    form = CodeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.validate():
        user = request.identity
        checked = request.service(ISignInService).check_code(
            user, form.value, request.client_addr
        )
        if checked is Outcome.THROTTLED:
            return _locked_out(request, user, "admin-verify")
        if checked is Outcome.OK:
            # A new id and a fresh sign-in that passed the second factor.
            request.session.sign_in(user.id, AUTHN_METHOD_TWO_STEP)
            forget_identity(request)
            actor(request).record(
                request.service(IAuditLog), "admin.verified", subject_user_id=user.id
            )
            return HTTPSeeOther(target)
        form.wrong()
    if request.method == "POST":
        request.response.status_int = 400
    return {"form": form, "next": target}


@view_config(
    route_name="admin.reauthenticate",
    renderer="admin/reauthenticate.jinja2",
    permission=Permission.ACCOUNT,
    require_methods=["GET", "HEAD", "POST"],
)
def reauthenticate(request):
    """The password again, when the sign-in is older than ``REAUTH_WINDOW``."""
    context = _admin_context(request)
    target = _next(request)
    if not context.roles:
        raise HTTPForbidden()
    if not context.verified:
        query = urlencode({"next": target})
        return HTTPSeeOther(f"{request.route_path('admin.verify')}?{query}")
    form = CurrentPasswordForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.validate():
        user = request.identity
        checked = request.service(ISignInService).reauthenticate(
            user, form.current_password.data
        )
        if checked is Outcome.THROTTLED:
            return _locked_out(request, user, "admin-reauthenticate")
        if checked is Outcome.OK:
            admin_rules.mark_reauthenticated(
                request.session, user.id, clock_of(request)()
            )
            actor(request).record(
                request.service(IAuditLog),
                "admin.reauthenticated",
                subject_user_id=user.id,
            )
            return HTTPSeeOther(target)
        form.current_password_wrong()
    if request.method == "POST":
        request.response.status_int = 400
    return {"form": form, "next": target}


@view_config(
    route_name="admin.index",
    renderer="admin/index.jinja2",
    permission=Permission.ADMIN,
)
def index(request):
    context = request.context
    return {
        "roles": sorted(context.roles),
        "can": {
            "users": request.has_permission(Permission.USERS_READ),
            "registry": request.has_permission(Permission.REGISTRY_READ),
            "audit": request.has_permission(Permission.AUDIT_READ),
            "grants": request.has_permission(Permission.GRANTS_READ),
        },
    }


def refusal(exc: Refused):
    """A service's refusal as the console says it."""
    message = REFUSALS.get(exc.code)
    if message is None:
        log.warning("untranslated refusal %s", exc.code)
        return _("This change was refused; nothing was changed.")
    return message


HOLDER_SORTS = {"name": User.full_name, "identifier": User.identifier}


def _grants_page(request, form: GrantForm, message=None) -> dict:
    roles = request.service(IAdminRoles)
    holders = listing(
        request,
        roles.holders_query(),
        HOLDER_SORTS,
        default="name",
        tiebreak=User.id,
    )
    held = roles.roles_by_user(user.id for user in holders.items)
    return {
        "holders": holders,
        "held": held,
        "form": form,
        "role_names": ROLE_NAMES,
        "role_choices": [
            (value, request._(name)) for value, name in ROLE_NAMES.items()
        ],
        "masked": masked,
        "message": message,
        # Shown even when stale: sending it asks for the password again.
        "can_act": request.context.holds(Permission.GRANTS_ACT),
    }


@view_config(
    route_name="admin.grants",
    renderer="admin/grants.jinja2",
    permission=Permission.GRANTS_READ,
)
def grants(request):
    """Who holds which admin role; a superadmin grants and revokes here."""
    return _grants_page(request, GrantForm())


@view_config(
    route_name="admin.grants",
    renderer="admin/grants.jinja2",
    permission=Permission.GRANTS_ACT,
    request_method="POST",
    require_methods=["POST"],
)
def change_grants(request):
    """Grant (the form) or revoke (a row's button); both post to the page
    itself, so an admin sent to re-authenticate comes back to it."""
    if request.POST.get("action") == "revoke":
        return _revoke(request)
    form = GrantForm(request.POST)
    if form.validate():
        try:
            user = request.service(IAccountService).find(form.parsed)
        except NotFound:
            form.not_found()
        else:
            changed = request.service(IAdminRoles).grant(
                user, form.role.data, actor=actor(request)
            )
            request.session.flash(
                _("The role has been granted.")
                if changed
                else _("The account already held this role; nothing changed.")
            )
            return HTTPSeeOther(request.route_path("admin.grants"))
    request.response.status_int = 400
    return _grants_page(request, form)


def _revoke(request):
    user = _user_by_id(request, request.POST.get("user"))
    role = request.POST.get("role")
    if user is None or role not in ROLE_NAMES:
        raise HTTPBadRequest()
    try:
        changed = request.service(IAdminRoles).revoke(user, role, actor=actor(request))
    except Refused as exc:
        request.response.status_int = 409
        return _grants_page(request, GrantForm(), message=refusal(exc))
    request.session.flash(
        _("The role has been revoked.")
        if changed
        else _("The account did not hold this role; nothing changed.")
    )
    return HTTPSeeOther(request.route_path("admin.grants"))


def _user_by_id(request, text: str | None) -> User | None:
    """The user whose id is ``text``, or None for anything else (never a 500)."""
    try:
        user_id = uuid.UUID(str(text))
    except ValueError:
        return None
    return request.dbsession.get(User, user_id)
