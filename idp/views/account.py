""" "Akaun saya": the signed-in user's own profile, password, image, email and sessions.

Every page needs the ``account`` permission and acts only on
``request.identity``: no page reads a user id from the address or the form,
so nobody can open or change another person's account through these pages
(WEB-11, AUTH-21). Changing the password, the security image or the email
asks for the current password; wrong guesses count against the same limit as
sign-in, and reaching it locks the account just as sign-in does.

The one exception is the page a new address's confirmation link leads to
(``account.email_confirm``): it is opened from the new mailbox, often on
another device, so it needs no sign-in; the link is the proof.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from zoneinfo import ZoneInfo

import segno
from babel.dates import format_datetime
from markupsafe import Markup
from pyramid.httpexceptions import HTTPBadRequest, HTTPSeeOther
from pyramid.renderers import render_to_response
from pyramid.view import view_config
from sqlalchemy import select

from idp import security_images
from idp.authz import Permission
from idp.db import utcnow
from idp.forms.account import (
    CurrentPasswordForm,
    EmailForm,
    PasswordForm,
    SecurityForm,
    TwoStepCheckForm,
    TwoStepConfirmForm,
)
from idp.forms.register import CATEGORIES
from idp.i18n import _
from idp.identifiers import Identifier
from idp.models import AuditEvent, IdpSession, User
from idp.models.session import end_user_sessions
from idp.security import forget_identity
from idp.services import mail
from idp.services.interfaces import (
    IAuditLog,
    IOutbox,
    IPasswordService,
    IRateLimiter,
    ISignInService,
    ITwoFactorService,
    IUserService,
)
from idp.services.signin import CODE_FAILURES, Outcome
from idp.services.tokens import (
    EMAIL_CHANGE_LIFETIME,
    EmailChangeTokens,
    request_email_change,
)
from idp.services.two_factor import AlreadyOn, clock_of
from idp.services.users import EmailTaken, PasswordChange
from idp.views.errors import render_error

log = logging.getLogger(__name__)

# Languages are named in themselves, as the language switch names them.
LANGUAGES = {"ms": "Bahasa Melayu", "en": "English"}
RECENT_SIGN_INS = 10
TIME_FORMAT = "d MMM y, HH:mm"

# (pattern, name), first match wins: Edge and Opera also say "Chrome", and
# Chrome also says "Safari".
_BROWSERS = (
    (re.compile(r"\bEdg(?:e|A|iOS)?/"), "Edge"),
    (re.compile(r"\b(?:OPR|Opera)/"), "Opera"),
    (re.compile(r"\bSamsungBrowser/"), "Samsung Internet"),
    (re.compile(r"\b(?:Firefox|FxiOS)/"), "Firefox"),
    (re.compile(r"\b(?:Chrome|Chromium|CriOS)/"), "Chrome"),
    (re.compile(r"\bVersion/[\d.]+.*\bSafari/"), "Safari"),
)
_SYSTEMS = (
    (re.compile(r"\bWindows\b"), "Windows"),
    (re.compile(r"\bAndroid\b"), "Android"),
    (re.compile(r"\biPad\b"), "iPadOS"),
    (re.compile(r"\b(?:iPhone|iPod)\b"), "iOS"),
    (re.compile(r"\bCrOS\b"), "ChromeOS"),
    (re.compile(r"\bMac OS X\b|\bMacintosh\b"), "macOS"),
    (re.compile(r"\bLinux\b"), "Linux"),
)


def _first(table, text: str) -> str | None:
    return next((name for pattern, name in table if pattern.search(text)), None)


def describe_browser(user_agent: str | None):
    """A ``User-Agent`` header as people say it: "Firefox on Windows".

    Only the common browsers and systems are named; anything else is an
    unknown browser. Returns a string or a ``TranslationString``.
    """
    text = user_agent or ""
    browser, system = _first(_BROWSERS, text), _first(_SYSTEMS, text)
    if browser and system:
        return _(
            "${browser} on ${system}", mapping={"browser": browser, "system": system}
        )
    if browser or system:
        return browser or system
    return _("Unknown browser")


def _check_current_password(request, form, user) -> Outcome:
    """Check the form's current password as sign-in would (``SignInService``).

    ``FAILED`` puts "your current password is wrong" on the form;
    ``THROTTLED`` means the account must now be locked (:func:`_locked_out`).
    """
    checked = request.service(ISignInService).reauthenticate(
        user, form.current_password.data
    )
    if checked is Outcome.FAILED:
        form.current_password_wrong()
    return checked


def _locked_out(request, user, reason: str) -> HTTPSeeOther:
    """Lock the account, sign this browser out and say why on the home page."""
    # This browser's session goes first: lock() then ends the others, and the
    # other order would delete this session's row twice.
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


def _audit(request, event: str, user, detail: dict | None = None) -> None:
    request.service(IAuditLog).record(
        event,
        subject_user_id=user.id,
        actor_user_id=user.id,
        client_address=request.client_addr,
        detail=detail,
    )


@view_config(
    route_name="account.index",
    renderer="account/index.jinja2",
    permission=Permission.ACCOUNT,
)
def index(request):
    user = request.identity
    category = CATEGORIES.get(user.category)
    return {
        "user": user,
        "identifier": Identifier(user.identifier_kind, user.identifier).masked,
        "category": request._(category) if category else user.category,
        "language": LANGUAGES.get(user.locale, user.locale),
        "image": security_images.get(user.security_image or ""),
        "phrase": user.security_phrase,
    }


@view_config(
    route_name="account.password",
    renderer="account/password.jinja2",
    permission=Permission.ACCOUNT,
    require_methods=["GET", "HEAD", "POST"],
)
def password(request):
    user = request.identity
    form = PasswordForm(request.POST if request.method == "POST" else None)
    if request.method != "POST":
        return {"form": form}
    valid = form.validate()
    if form.current_password.data:
        checked = _check_current_password(request, form, user)
        if checked is Outcome.THROTTLED:
            return _locked_out(request, user, "account-password")
        valid = valid and checked is Outcome.OK
    users = request.service(IUserService)
    if valid and form.check_policy(users.policy_violations(user, form.password.data)):
        users.set_password(
            user,
            form.password.data,
            how=PasswordChange.ACCOUNT,
            client_address=request.client_addr,
            keep_session=request.session.row,
        )
        request.session.reauthenticated()
        request.session.flash(_("Your password has been changed."))
        return HTTPSeeOther(request.route_path("account.index"))
    request.response.status_int = 400
    return {"form": form}


def _security_page(request, form: SecurityForm) -> dict:
    return {"form": form, "images": security_images.CATALOGUE}


@view_config(
    route_name="account.security",
    renderer="account/security.jinja2",
    permission=Permission.ACCOUNT,
    require_methods=["GET", "HEAD", "POST"],
)
def security(request):
    user = request.identity
    if request.method != "POST":
        form = SecurityForm(
            security_image=user.security_image, security_phrase=user.security_phrase
        )
        return _security_page(request, form)
    form = SecurityForm(request.POST)
    valid = form.validate()
    if form.current_password.data:
        checked = _check_current_password(request, form, user)
        if checked is Outcome.THROTTLED:
            return _locked_out(request, user, "account-security")
        valid = valid and checked is Outcome.OK
    if valid:
        # Only now is the current password known to be the user's: compare
        # the new phrase with it (AUTH-31, the reverse of the password rule).
        passwords = request.service(IPasswordService)
        valid = form.check_phrase(
            passwords.check_phrase(form.phrase, password=form.current_password.data)
        )
    if not valid:
        request.response.status_int = 400
        return _security_page(request, form)
    changed = [
        name
        for name, old, new in (
            ("image", user.security_image, form.security_image.data),
            ("phrase", user.security_phrase, form.phrase),
        )
        if old != new
    ]
    user.security_image = form.security_image.data
    user.security_phrase = form.phrase
    _audit(request, "security_image.changed", user, {"changed": changed})
    mail.security_image_changed(request.service(IOutbox), user, changed_at=utcnow())
    request.session.flash(_("Your security image and phrase have been saved."))
    return HTTPSeeOther(request.route_path("account.index"))


def _active_sessions(request, user) -> list[dict]:
    now = utcnow()
    idle = dt.timedelta(seconds=request.registry.settings["idp.session_idle_seconds"])
    rows = request.dbsession.scalars(
        select(IdpSession)
        .where(
            IdpSession.user_id == user.id,
            IdpSession.expires_at > now,
            IdpSession.last_seen_at > now - idle,
        )
        .order_by(IdpSession.last_seen_at.desc(), IdpSession.created_at.desc())
    ).all()
    current = request.session.row
    return [
        {
            "created": row.created_at,
            "last_seen": row.last_seen_at,
            "address": row.client_address,
            "browser": describe_browser(row.user_agent),
            "current": current is not None and row.id == current.id,
        }
        for row in rows
    ]


def _recent_sign_ins(request, user) -> list[dict]:
    rows = request.dbsession.scalars(
        select(AuditEvent)
        .where(
            AuditEvent.event == "login.success",
            AuditEvent.subject_user_id == user.id,
        )
        .order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
        .limit(RECENT_SIGN_INS)
    ).all()
    sign_ins = []
    for row in rows:
        agent = (row.detail or {}).get("user_agent")
        sign_ins.append(
            {
                "at": row.occurred_at,
                "address": row.client_address,
                "browser": describe_browser(agent) if agent else None,
            }
        )
    return sign_ins


@view_config(
    route_name="account.sessions",
    renderer="account/sessions.jinja2",
    permission=Permission.ACCOUNT,
    require_methods=["GET", "HEAD", "POST"],
)
def sessions(request):
    user = request.identity
    if request.method == "POST":
        if request.POST.get("action") != "signout-all":
            raise HTTPBadRequest()
        # This browser's session first (its row and cookie), then the rest:
        # ending them the other way round would delete this row twice.
        ended = int(request.session.row is not None)
        request.session.invalidate()
        forget_identity(request)
        ended += end_user_sessions(request.dbsession, user.id)
        _audit(request, "sessions.ended", user, {"how": "account", "count": ended})
        request.session.flash(_("You have been signed out of every session."))
        return HTTPSeeOther(request.route_path("home"))
    zone = request.registry.settings["idp.timezone"]
    tzinfo, locale = ZoneInfo(zone), request.locale_name

    def when(moment: dt.datetime) -> str:
        return format_datetime(moment, TIME_FORMAT, tzinfo=tzinfo, locale=locale)

    return {
        "sign_ins": _recent_sign_ins(request, user),
        "active": _active_sessions(request, user),
        "when": when,
        "timezone": zone,
    }


# Changing the email: asked for here, confirmed by a link sent to the new
# address (idp.services.tokens.EmailChangeJob), a notice to the old one.

EMAIL_STATE = "email_change"
# The link's URL holds the token: nothing reached from it may see it.
NO_REFERRER = {"Referrer-Policy": "no-referrer"}
EMAIL_LINK_PAGE = (
    "email_link",
    _("This link cannot be used"),
    _(
        "The link to confirm a new email address is wrong, has already been "
        'used or has expired. Sign in and ask for a new one under "Change '
        'email" in My account.'
    ),
)
EMAIL_TAKEN_PAGE = (
    "email_taken",
    _("Your email was not changed"),
    _(
        "This email address is already used by another account, so your "
        "account keeps its current address. Each account needs its own email "
        "address; if this one is yours, contact the helpdesk."
    ),
)


def _email_page(request, form: EmailForm, *, throttled: bool = False) -> dict:
    return {
        "form": form,
        "throttled": throttled,
        "hours": int(EMAIL_CHANGE_LIFETIME.total_seconds() // 3600),
    }


@view_config(
    route_name="account.email",
    renderer="account/email.jinja2",
    permission=Permission.ACCOUNT,
    require_methods=["GET", "HEAD", "POST"],
)
def email(request):
    user = request.identity
    if request.method != "POST":
        return _email_page(request, EmailForm(user=user))
    form = EmailForm(request.POST, user=user)
    valid = form.validate()
    if form.current_password.data:
        checked = _check_current_password(request, form, user)
        if checked is Outcome.THROTTLED:
            return _locked_out(request, user, "account-email")
        valid = valid and checked is Outcome.OK
    if not valid:
        request.response.status_int = 400
        return _email_page(request, form)
    if not request.service(IRateLimiter).hit("account.email", str(user.id)).allowed:
        request.response.status_int = 429
        return _email_page(request, form, throttled=True)
    # The same request for every address, whoever has it (AUTH-05, AUTH-06):
    # one job; the delivery worker sends the link, or tells the address's
    # owner it is taken.
    request_email_change(
        request.service(IOutbox),
        user,
        form.address,
        client_address=request.client_addr,
    )
    _audit(request, "email.change_requested", user)
    request.session.flash(
        _(
            "We have sent a link to the new address. Open it within 24 hours to "
            "confirm the change; until then your email stays as it is."
        )
    )
    return HTTPSeeOther(request.route_path("account.index"))


def _email_link_refused(request, page=EMAIL_LINK_PAGE):
    """The bilingual refusal (400) for the email-change link, as a response."""
    request.session.pop(EMAIL_STATE, None)
    reference, values = render_error(request, 400, page, headers=NO_REFERRER)
    # The route's name, not the path: the path may hold the token.
    log.info("email link refused at %s [%s]", request.matched_route.name, reference)
    return render_to_response(
        "errors/error.jinja2", values, request=request, response=request.response
    )


@view_config(route_name="account.email_link")
def email_link(request):
    """Swap the token in the URL for session state and leave the URL (WEB-13).

    Opening the link changes nothing: a mail scanner that follows links must
    not confirm an address. The person confirms with a button.
    """
    row = EmailChangeTokens(request.dbsession).find(request.matchdict["token"])
    if row is None:
        return _email_link_refused(request)
    request.session[EMAIL_STATE] = {"token_id": str(row.id)}
    return HTTPSeeOther(
        request.route_path("account.email_confirm"), headers=NO_REFERRER
    )


def _email_progress(request):
    """The live link and its user of the change under way, or None."""
    state = request.session.get(EMAIL_STATE)
    if not isinstance(state, dict):
        return None
    row = EmailChangeTokens(request.dbsession).get(state.get("token_id"))
    if row is None or row.new_email is None:
        return None
    user = request.dbsession.get(User, row.user_id)
    if user is None or user.disabled_at is not None:
        return None
    return row, user


@view_config(
    route_name="account.email_confirm",
    renderer="account/email_confirm.jinja2",
    require_methods=["GET", "HEAD", "POST"],
)
def email_confirm(request):
    """Confirm the new address: any browser holding the link may (no sign-in).

    The link proves the new mailbox; the current password was asked for
    when the change was requested. Sessions are kept: they rest on the
    password, which has not changed, and the old address is told how to
    undo a change its owner did not make.
    """
    progress = _email_progress(request)
    if progress is None:
        return _email_link_refused(request)
    row, user = progress
    if request.method != "POST":
        return {
            "identifier": Identifier(user.identifier_kind, user.identifier).masked,
            "new_email": row.new_email,
        }
    # Used up before anything changes: of two requests racing with one
    # link, only one gets further.
    if not EmailChangeTokens(request.dbsession).void(row):
        return _email_link_refused(request)
    try:
        previous = request.service(IUserService).change_email(user, row.new_email)
    except EmailTaken:
        return _email_link_refused(request, EMAIL_TAKEN_PAGE)
    request.session.pop(EMAIL_STATE, None)
    # The old address, so the helpdesk can put it back for an owner who
    # did not make the change (the notice to that address says it can).
    _audit(request, "email.changed", user, {"how": "account", "previous": previous})
    request.session.flash(
        _(
            "Your email has been changed. From now on idMe sends its email to "
            "the new address."
        )
    )
    identity = request.identity
    if identity is not None and identity.id == user.id:
        return HTTPSeeOther(request.route_path("account.index"))
    return HTTPSeeOther(request.route_path("login.identifier"))


# Two-step verification ("Pengesahan dua langkah"): an authenticator app's
# codes after the password, with recovery codes for a lost phone
# (idp.services.two_factor). Turning it on asks for the password, then a
# first code; replacing the recovery codes and turning it off ask for the
# password and a code, and a wrong code counts as a wrong password.

SETUP_STATE = "two_step_setup"
# How long the password typed to start the setup vouches for it.
SETUP_LIFETIME = dt.timedelta(minutes=10)
# Pages showing a secret or recovery codes are not kept by the browser.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _qr_svg(request, uri: str) -> Markup:
    """The otpauth URI as an inline SVG QR code, drawn here (no image fetched)."""
    code = segno.make(uri, error="m")
    options = {"scale": 5, "border": 4}
    svg = code.svg_inline(
        **options,
        dark="#000",
        light="#fff",
        omitsize=True,
        svgclass="qr-code",
        title=request._(_("QR code for your authenticator app")),
    )
    # A viewBox (so CSS can shrink it on a narrow phone) and its natural size.
    width, height = code.symbol_size(**options)
    sized = f'<svg role="img" width="{width}" height="{height}" '
    # segno writes only path data and the escaped title: nothing from the
    # user reaches the markup unescaped.
    return Markup(svg.replace("<svg ", sized, 1))  # noqa: S704


def _two_step_page(request, renderer: str, values: dict, *, status: int = 200):
    response = render_to_response(
        renderer, values, request=request, response=request.response
    )
    response.status_int = status
    response.headers.update(NO_STORE)
    return response


def _check_two_step(request, form, user, reason: str):
    """Check ``form``'s password and code; True, False, or the lock-out redirect.

    The password's rightness does not forget earlier failures: only a right
    code does, so neither can be walked by typing the other again.
    """
    signin = request.service(ISignInService)
    valid = form.validate()
    if form.current_password.data:
        checked = signin.reauthenticate(
            user, form.current_password.data, forget_failures=False
        )
        if checked is Outcome.THROTTLED:
            return _locked_out(request, user, reason)
        if checked is Outcome.FAILED:
            form.current_password_wrong()
            return False
    if not valid:
        return False
    checked = signin.check_code(user, form.value, request.client_addr)
    if checked is Outcome.THROTTLED:
        return _locked_out(request, user, CODE_FAILURES)
    if checked is Outcome.FAILED:
        form.wrong()
        return False
    return True


@view_config(
    route_name="account.two_step",
    renderer="account/two_step.jinja2",
    permission=Permission.ACCOUNT,
)
def two_step(request):
    user = request.identity
    two_factor = request.service(ITwoFactorService)
    enabled = two_factor.enabled(user)
    return {
        "enabled": enabled,
        "codes_left": two_factor.recovery_codes_left(user) if enabled else 0,
    }


def _setup_fresh(request) -> bool:
    state = request.session.get(SETUP_STATE)
    if not isinstance(state, dict):
        return False
    try:
        since = dt.datetime.fromisoformat(state["since"])
    except (KeyError, TypeError, ValueError):
        return False
    return clock_of(request)() - since <= SETUP_LIFETIME


@view_config(
    route_name="account.two_step_setup",
    renderer="account/two_step_setup.jinja2",
    permission=Permission.ACCOUNT,
    require_methods=["GET", "HEAD", "POST"],
)
def two_step_setup(request):
    """Turn two-step verification on: the password, the QR code, a first code.

    The secret is shown only after the password, and on for good only once
    a code from it proves the app holds it; the recovery codes are then
    shown once, on the answer to that POST (never stored where a reload or
    the browser's cache could show them again).
    """
    user = request.identity
    two_factor = request.service(ITwoFactorService)
    if two_factor.enabled(user):
        return HTTPSeeOther(request.route_path("account.two_step"))
    step = request.POST.get("step") if request.method == "POST" else None
    if request.method == "POST" and step not in ("password", "confirm"):
        raise HTTPBadRequest()
    enrolment = two_factor.pending(user) if _setup_fresh(request) else None
    if step == "password" or (step is None and enrolment is None):
        return _setup_password(request, user, two_factor, posted=step is not None)
    if enrolment is None:
        # The password was typed too long ago (or in another session).
        return HTTPSeeOther(request.route_path("account.two_step_setup"))
    form = TwoStepConfirmForm(request.POST if step else None)
    status = 200
    if step:
        codes = None
        if form.validate():
            codes = two_factor.confirm(
                user, form.value, client_address=request.client_addr
            )
            if codes is None:
                form.wrong()
        if codes is not None:
            request.session.pop(SETUP_STATE, None)
            return _two_step_page(
                request,
                "account/two_step_codes_shown.jinja2",
                {"codes": codes, "first": True},
            )
        status = 400
    values = {
        "form": form,
        "enrolment": enrolment,
        "qr": _qr_svg(request, enrolment.uri),
    }
    return _two_step_page(
        request, "account/two_step_setup.jinja2", values, status=status
    )


def _setup_password(request, user, two_factor, *, posted: bool):
    form = CurrentPasswordForm(request.POST if posted else None)
    if posted:
        valid = form.validate()
        if form.current_password.data:
            checked = _check_current_password(request, form, user)
            if checked is Outcome.THROTTLED:
                return _locked_out(request, user, "account-two-step")
            valid = valid and checked is Outcome.OK
        if valid:
            try:
                two_factor.begin(user)
            except AlreadyOn:
                # Turned on meanwhile, in another tab.
                return HTTPSeeOther(request.route_path("account.two_step"))
            request.session[SETUP_STATE] = {"since": clock_of(request)().isoformat()}
            return HTTPSeeOther(request.route_path("account.two_step_setup"))
        request.response.status_int = 400
    return _two_step_page(
        request,
        "account/two_step_password.jinja2",
        {"form": form},
        status=request.response.status_int,
    )


def _two_step_change(request, change):
    """A page that asks for the password and a code, then makes ``change``.

    ``change(user, two_factor)`` returns the response. Off for a user
    without a second factor, the page leads to the status page.
    """
    user = request.identity
    two_factor = request.service(ITwoFactorService)
    if not two_factor.enabled(user):
        return HTTPSeeOther(request.route_path("account.two_step"))
    form = TwoStepCheckForm(request.POST if request.method == "POST" else None)
    if request.method != "POST":
        return {"form": form}
    checked = _check_two_step(request, form, user, "account-two-step")
    if isinstance(checked, HTTPSeeOther):
        return checked
    if not checked:
        request.response.status_int = 400
        return {"form": form}
    return change(user, two_factor)


@view_config(
    route_name="account.two_step_codes",
    renderer="account/two_step_codes.jinja2",
    permission=Permission.ACCOUNT,
    require_methods=["GET", "HEAD", "POST"],
)
def two_step_codes(request):
    """New recovery codes, replacing the old: the password and a code first."""

    def replace(user, two_factor):
        codes = two_factor.regenerate(user, client_address=request.client_addr)
        return _two_step_page(
            request,
            "account/two_step_codes_shown.jinja2",
            {"codes": codes, "first": False},
        )

    return _two_step_change(request, replace)


@view_config(
    route_name="account.two_step_off",
    renderer="account/two_step_off.jinja2",
    permission=Permission.ACCOUNT,
    require_methods=["GET", "HEAD", "POST"],
)
def two_step_off(request):
    """Turn two-step verification off: the password and a code first."""

    def turn_off(user, two_factor):
        two_factor.disable(user, client_address=request.client_addr)
        request.session.flash(
            _(
                "Two-step verification is off. Signing in now asks only for "
                "your password."
            )
        )
        return HTTPSeeOther(request.route_path("account.two_step"))

    return _two_step_change(request, turn_off)
