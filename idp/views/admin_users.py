"""The helpdesk's pages of the admin console: find a user, see why they cannot
sign in, and help (unlock, a password reset, the right email, sessions
ended, the profile corrected).

Reading needs ``admin.users.read`` (helpdesk, auditor); every act needs
``admin.users.act`` (helpdesk, within 15 minutes of signing in), on GET
(its confirmation or form) as on POST (doing it), so an admin sent to
re-authenticate comes back to the act's page. The rules and audit events
are ``AccountService``'s; an account holding an admin role is not changed
here (:func:`idp.services.admin.check_target`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from pyramid.httpexceptions import HTTPNotFound, HTTPSeeOther
from pyramid.view import view_config
from sqlalchemy import select

from idp.authz import Permission
from idp.contact import mask_email, mask_phone
from idp.db import utcnow
from idp.forms.admin import EmailForm, LockForm, ProfileForm, SearchForm
from idp.forms.register import CATEGORIES, NEEDS_INSTITUTION
from idp.i18n import _
from idp.identifiers import Identifier
from idp.models import AuditEvent, IdpSession, User
from idp.services import admin as admin_rules
from idp.services.accounts import search
from idp.services.errors import Invalid, Refused
from idp.services.interfaces import IAccountService, ITwoFactorService
from idp.views.account import describe_browser
from idp.views.admin import actor, refusal
from idp.views.listing import listing

TIME_FORMAT = "d MMM y, HH:mm"
RECENT = 20
SIGN_IN_EVENTS = {
    "login.success": _("Signed in"),
    "login.failure": _("Wrong password"),
    "login.code_failure": _("Wrong code"),
}
SORTS = {
    "name": User.full_name,
    "identifier": User.identifier,
    "created": User.created_at,
}


def _when(request):
    zone = ZoneInfo(request.registry.settings["idp.timezone"])
    locale = request.locale_name

    def when(moment: dt.datetime | None) -> str:
        if moment is None:
            return "-"
        return format_datetime(moment, TIME_FORMAT, tzinfo=zone, locale=locale)

    return when


def _masked_number(user: User) -> str:
    return Identifier(user.identifier_kind, user.identifier).masked


@view_config(
    route_name="admin.users",
    renderer="admin/users.jinja2",
    permission=Permission.USERS_READ,
)
def users(request):
    form = SearchForm(request.GET)
    found = None
    if (form.q.data or "").strip() or "q" in request.GET:
        if form.validate():
            try:
                statement = search(form.q.data, form.country.data or None)
            except Refused as exc:
                form.refused(exc.code)
            else:
                keep = {"q": form.q.data}
                if form.country.data:
                    keep["country"] = form.country.data
                found = listing(
                    request,
                    statement,
                    SORTS,
                    default="name",
                    tiebreak=User.id,
                    keep=keep,
                )
        if form.errors:
            request.response.status_int = 400
    return {
        "form": form,
        "found": found,
        "mask_email": mask_email,
        "mask_phone": mask_phone,
        "number": _masked_number,
        "when": _when(request),
    }


def _target(request) -> User:
    """The user the address names; 404 for anything else."""
    try:
        user_id = uuid.UUID(request.matchdict["id"])
    except ValueError:
        raise HTTPNotFound() from None
    user = request.dbsession.get(User, user_id)
    if user is None:
        raise HTTPNotFound()
    return user


def _sign_ins(request, user: User) -> list[dict]:
    rows = request.dbsession.scalars(
        select(AuditEvent)
        .where(
            AuditEvent.event.in_(SIGN_IN_EVENTS),
            AuditEvent.subject_user_id == user.id,
        )
        .order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
        .limit(RECENT)
    ).all()
    return [
        {
            "at": row.occurred_at,
            "outcome": SIGN_IN_EVENTS[row.event],
            "ok": row.event == "login.success",
            "address": row.client_address,
            "browser": describe_browser((row.detail or {}).get("user_agent"))
            if (row.detail or {}).get("user_agent")
            else None,
        }
        for row in rows
    ]


def _sessions(request, user: User) -> list[dict]:
    now = utcnow()
    idle = dt.timedelta(seconds=request.registry.settings["idp.session_idle_seconds"])
    rows = request.dbsession.scalars(
        select(IdpSession)
        .where(
            IdpSession.user_id == user.id,
            IdpSession.expires_at > now,
            IdpSession.last_seen_at > now - idle,
        )
        .order_by(IdpSession.last_seen_at.desc())
    ).all()
    return [
        {
            "created": row.created_at,
            "last_seen": row.last_seen_at,
            "address": row.client_address,
            "browser": describe_browser(row.user_agent),
        }
        for row in rows
    ]


@view_config(
    route_name="admin.user",
    renderer="admin/user.jinja2",
    permission=Permission.USERS_READ,
)
def user(request):
    target = _target(request)
    category = CATEGORIES.get(target.category)
    return {
        "user": target,
        "number": _masked_number(target),
        "category": category or target.category,
        "standing": request.service(IAccountService).standing(target),
        "two_step": request.service(ITwoFactorService).enabled(target),
        "admin_roles": sorted(admin_rules.roles_of(request.dbsession, target.id)),
        "roles": sorted(target.roles, key=lambda role: role.name),
        "sign_ins": _sign_ins(request, target),
        "sessions": _sessions(request, target),
        "when": _when(request),
        "can_act": request.context.holds(Permission.USERS_ACT),
    }


# The acts. Each is a page (GET: its confirmation or form) and a POST.

ACTS = {
    "lock": (_("Lock the account"), _("The account has been locked.")),
    "unlock": (_("Unlock the account"), _("The account has been unlocked.")),
    "reset": (
        _("Send a password reset"),
        _("A temporary password has been emailed to the account's address."),
    ),
    "sessions": (
        _("End every session"),
        _("Every session of the account has ended."),
    ),
    "email": (
        _("Correct the email address"),
        _("The email address has been corrected."),
    ),
    "profile": (_("Edit the profile"), _("The profile has been saved.")),
}


def _act_page(request, target: User, act: str, form=None, message=None) -> dict:
    title, _done = ACTS[act]
    return {
        "user": target,
        "number": _masked_number(target),
        "act": act,
        "title": title,
        "form": form,
        "message": message,
        "categories": [(value, request._(text)) for value, text in CATEGORIES.items()],
        "needs_institution": sorted(NEEDS_INSTITUTION),
    }


ALREADY_LOCKED = _("The account was already locked; nothing changed.")
NOT_LOCKED = _(
    "The account was not locked; its count of wrong passwords has been cleared."
)


def _done(request, target: User, act: str, message=None) -> HTTPSeeOther:
    request.session.flash(message or ACTS[act][1])
    return HTTPSeeOther(request.route_path("admin.user", id=str(target.id)))


def _refused(request, target, act, exc, form=None) -> dict:
    request.response.status_int = 400 if isinstance(exc, Invalid) else 409
    if form is not None and exc.field in getattr(form, "_fields", {}):
        form[exc.field].errors = [refusal(exc)]
        return _act_page(request, target, act, form)
    return _act_page(request, target, act, form, message=refusal(exc))


def _form_for(request, act: str, target: User):
    data = request.POST if request.method == "POST" else None
    if act == "lock":
        return LockForm(data)
    if act == "email":
        return EmailForm(data, email=target.email)
    if act == "profile":
        return ProfileForm(
            data,
            full_name=target.full_name,
            phone=target.phone,
            category=target.category,
            institution=target.institution,
        )
    return None


@view_config(
    route_name="admin.user_act",
    renderer="admin/user_act.jinja2",
    permission=Permission.USERS_ACT,
    require_methods=["GET", "HEAD", "POST"],
)
def user_act(request):
    act = request.matchdict["act"]
    if act not in ACTS:
        raise HTTPNotFound()
    target = _target(request)
    form = _form_for(request, act, target)
    try:
        admin_rules.check_target(request.dbsession, target)
    except Refused as exc:
        return _refused(request, target, act, exc)
    if request.method != "POST":
        return _act_page(request, target, act, form)
    if form is not None and not form.validate():
        request.response.status_int = 400
        return _act_page(request, target, act, form)
    accounts = request.service(IAccountService)
    by = actor(request)
    try:
        if act == "lock":
            if accounts.lock(target, reason=form.value, actor=by) is None:
                return _done(request, target, act, ALREADY_LOCKED)
        elif act == "unlock":
            if not accounts.unlock(target, actor=by):
                return _done(request, target, act, NOT_LOCKED)
        elif act == "reset":
            accounts.reset_password(target, actor=by)
        elif act == "sessions":
            accounts.end_sessions(target, actor=by)
        elif act == "email":
            accounts.set_email(target, form.address, actor=by)
        else:
            accounts.update_profile(target, actor=by, **form.values())
    except Refused as exc:
        return _refused(request, target, act, exc, form)
    return _done(request, target, act)
