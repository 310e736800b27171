"""Sign-in: "Daftar Masuk", in three steps as idMe does it.

1. ``/login``: the MyKad or passport number.
2. ``/login/image``: the user's security image and phrase (or, for a number
   nobody registered, a decoy derived from it), and a box to tick if they are
   the user's own.
3. ``/login/password``: the password, only once the box was ticked.
4. ``/login/code``: for a user who turned two-step verification on, a code
   from their authenticator app or a recovery code, only once the password
   was right. The session is made only after it.

Where the user is in the flow lives in the server-side session, so a step
cannot be skipped or posted out of order. Steps 2 and 3 do the same work and
render the same template for registered and unregistered numbers; only the
image and phrase differ.
"""

from __future__ import annotations

import datetime as dt
import uuid

from babel.dates import format_timedelta
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.i18n import TranslationString
from pyramid.view import view_config

from idp import metrics
from idp.forms import mark_captcha_wrong
from idp.forms.login import (
    MESSAGES,
    CodeForm,
    IdentifierForm,
    ImageForm,
    PasswordForm,
)
from idp.forms.register import country_choices
from idp.identifiers import Identifier
from idp.models import User
from idp.redirects import safe_next
from idp.saml import slo
from idp.security import forget_identity, keep_continuation
from idp.services.interfaces import (
    IAuditLog,
    ICaptchaService,
    IRateLimiter,
    ISignInService,
    IUserService,
)
from idp.services.security_image import (
    DecoyPool,
    count_lookup,
    lookups_exhausted,
    shown_for,
)
from idp.services.signin import (
    AUTHN_METHOD,
    AUTHN_METHOD_TWO_STEP,
    Outcome,
    password_mark,
)
from idp.services.two_factor import clock_of
from idp.views.captcha import show_challenge

STATE = "login"
# The code step waits this long after the password, and takes this many
# codes, before the password must be typed again. The real limit on guessing
# is the identifier's (login.identifier), which a right password does not
# reset for a user with a second factor.
CODE_STEP_LIFETIME = dt.timedelta(minutes=5)
CODE_STEP_TRIES = 5


def _state(request) -> dict | None:
    state = request.session.get(STATE)
    return state if isinstance(state, dict) and state.get("identifier") else None


def _restart(request) -> HTTPSeeOther:
    return HTTPSeeOther(request.route_path("login.identifier"))


def _shown(request, state: dict) -> dict:
    """The image and phrase for the number in ``state``: the user's, or a decoy."""
    users = request.service(IUserService)
    user = users.find_by_identifier(state["identifier"])
    secret = request.registry.settings["idp.hmac_key"]
    pool = DecoyPool.from_request(request)
    image, phrase = shown_for(secret, state["identifier"], user, pool)
    identifier = Identifier(state["kind"], state["identifier"])
    return {"image": image, "phrase": phrase, "identifier": identifier.display}


def after_sign_in(request, user, next_url: str | None) -> HTTPSeeOther:
    """Where a sign-in goes: ``next_url``, or first the forced password change.

    A temporary password leads to the change form; where the sign-in was
    going (a service's parked request, say) waits in the session and is
    taken up once the new password is set (``idp/views/password.py``).
    """
    if user.must_change_password:
        keep_continuation(request, next_url)
        return HTTPSeeOther(request.route_path("password.new"))
    return HTTPSeeOther(next_url or request.route_path("home"))


def _identifier_page(request, form, *, limited: bool, captcha_wrong: bool = False):
    """The identifier step; past the lookup limits, with the captcha or a wait.

    Whether the captcha shows depends only on the limits, never on the number
    typed, so it says nothing about who is registered.
    """
    captcha = request.service(ICaptchaService)
    values = {
        "form": form,
        "countries": country_choices(request.locale_name),
        "message": None,
        "captcha_enabled": False,
        "captcha_widget": None,
    }
    if not limited:
        return values
    if not captcha.enabled:
        form.captcha_answer.data = ""
        form.captcha_token.data = ""
        values["message"] = MESSAGES["lookups.wait"]
        return values
    values.update(show_challenge(request, form, "lookup"))
    if captcha_wrong:
        mark_captcha_wrong(form, captcha.kind)
    values["message"] = MESSAGES["lookups.captcha"]
    return values


def identifier_start(request) -> dict:
    """The identifier step as first shown, for ``login/_form.jinja2``.

    Both ``/login`` and ``/`` (for a signed-out visitor) show it; the form
    posts to ``/login`` either way, so there is one flow with one set of
    limits. ``?next=`` is kept when it is a safe local path.
    """
    limiter = request.service(IRateLimiter)
    form = IdentifierForm(next=safe_next(request.GET.get("next")) or "")
    limited = lookups_exhausted(limiter, request.client_addr)
    return _identifier_page(request, form, limited=limited)


@view_config(
    route_name="login.identifier",
    renderer="login/identifier.jinja2",
    require_methods=["GET", "HEAD", "POST"],
)
def identifier(request):
    if request.method != "POST":
        return identifier_start(request)
    limiter = request.service(IRateLimiter)
    form = IdentifierForm(request.POST)
    if not form.validate():
        request.response.status_int = 400
        limited = lookups_exhausted(limiter, request.client_addr)
        return _identifier_page(request, form, limited=limited)
    if not count_lookup(limiter, request.client_addr):
        captcha = request.service(ICaptchaService)
        # captcha.check() passes everything while the captcha is off; then
        # the limit simply holds until the window slides.
        if not (
            captcha.enabled
            and captcha.check(request.POST, request.client_addr, purpose="lookup")
        ):
            # A lookup refused here must not leave an earlier one's image
            # reachable at /login/image.
            if request.session.get(STATE) is not None:
                del request.session[STATE]
            request.response.status_int = 429
            posted = bool(request.POST.get("captcha_token"))
            return _identifier_page(request, form, limited=True, captcha_wrong=posted)
    request.session[STATE] = {
        "identifier": form.parsed.value,
        "kind": form.parsed.kind,
        "confirmed": False,
        "next": safe_next(form.next.data),
    }
    return HTTPSeeOther(request.route_path("login.image"))


@view_config(
    route_name="login.image",
    renderer="login/image.jinja2",
    require_methods=["GET", "HEAD", "POST"],
)
def image(request):
    state = _state(request)
    if state is None:
        return _restart(request)
    form = ImageForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        if form.validate():
            request.session[STATE] = {**state, "confirmed": True}
            return HTTPSeeOther(request.route_path("login.password"))
        request.response.status_int = 400
    return {"form": form, **_shown(request, state)}


@view_config(
    route_name="login.password",
    renderer="login/password.jinja2",
    require_methods=["GET", "HEAD", "POST"],
)
def password(request):
    state = _state(request)
    if state is None or not state.get("confirmed"):
        return _restart(request)
    signin = request.service(ISignInService)
    captcha = request.service(ICaptchaService)
    form = PasswordForm(request.POST if request.method == "POST" else None)
    needs_captcha = captcha.enabled and signin.captcha_required(request.client_addr)
    message = None
    if request.method == "POST":
        if "second" in state:
            # The password typed again: a code step it opened before closes.
            state = {key: value for key, value in state.items() if key != "second"}
            request.session[STATE] = state
        message = _check(request, form, state, signin, captcha, needs_captcha)
        if isinstance(message, HTTPSeeOther):
            return message
        request.response.status_int = 429 if message == "throttled" else 400
    token = captcha.new_challenge("login") if needs_captcha else ""
    return {
        "form": form,
        "message": MESSAGES.get(message) if message else None,
        "warning": _lock_warning(request, signin, state["identifier"]),
        "needs_captcha": needs_captcha,
        "captcha_token": token,
        "captcha_widget": captcha.widget,
        **_shown(request, state),
    }


def _lock_warning(request, signin, identifier: str) -> TranslationString | None:
    """ "2 attempts left before the account is locked for 15 minutes", or None."""
    warning = signin.lock_warning(identifier)
    if warning is None:
        return None
    duration = format_timedelta(warning.period, locale=request.locale_name)
    key = "lock.one" if warning.remaining == 1 else "lock.many"
    return TranslationString(
        MESSAGES[key], mapping={"count": warning.remaining, "duration": duration}
    )


def _check(request, form, state, signin, captcha, needs_captcha):
    """Check the posted password; a redirect on success, else a message key."""
    if not form.validate():
        return None
    if needs_captcha and not captcha.check(
        request.POST, request.client_addr, purpose="login"
    ):
        return "failed"
    attempt = signin.attempt(
        state["identifier"],
        state["kind"],
        form.password.data,
        request.client_addr,
        request.user_agent,
        captcha_solved=needs_captcha,
    )
    if attempt.outcome is Outcome.THROTTLED:
        return "throttled"
    if attempt.outcome is Outcome.SECOND_STEP:
        second = {
            "user": str(attempt.user.id),
            "mark": password_mark(attempt.user),
            "since": clock_of(request)().isoformat(),
            "tries": 0,
        }
        request.session[STATE] = {**state, "second": second}
        # A new id already: a cookie planted before this step cannot be the
        # one that carries the code step (session fixation).
        request.session.rotate()
        return HTTPSeeOther(request.route_path("login.code"))
    if not attempt.ok:
        return "failed"
    del request.session[STATE]
    request.session.sign_in(attempt.user.id, AUTHN_METHOD)
    forget_identity(request)
    return after_sign_in(request, attempt.user, state.get("next"))


def _code_step(request, state: dict):
    """The user whose code is awaited, or None if the code step must start over.

    It starts over when it is older than :data:`CODE_STEP_LIFETIME`, has
    taken :data:`CODE_STEP_TRIES` codes, or the user's password changed
    since it was typed.
    """
    second = state.get("second")
    if not isinstance(second, dict):
        return None
    try:
        since = dt.datetime.fromisoformat(second["since"])
        user_id = uuid.UUID(second["user"])
    except (KeyError, TypeError, ValueError):
        return None
    if clock_of(request)() - since > CODE_STEP_LIFETIME:
        return None
    if second.get("tries", 0) >= CODE_STEP_TRIES:
        return None
    user = request.dbsession.get(User, user_id)
    if user is None or password_mark(user) != second.get("mark"):
        return None
    return user


@view_config(
    route_name="login.code",
    renderer="login/code.jinja2",
    require_methods=["GET", "HEAD", "POST"],
)
def code(request):
    state = _state(request)
    if state is None or "second" not in state:
        return _restart(request)
    user = _code_step(request, state)
    if user is None:
        del request.session[STATE]
        request.session.flash(MESSAGES["code.expired"])
        return _restart(request)
    form = CodeForm(request.POST if request.method == "POST" else None)
    message = None
    if request.method == "POST":
        if form.validate():
            signin = request.service(ISignInService)
            attempt = signin.second_step(
                user, state["kind"], form.value, request.client_addr, request.user_agent
            )
            if attempt.ok:
                del request.session[STATE]
                request.session.sign_in(user.id, AUTHN_METHOD_TWO_STEP)
                forget_identity(request)
                return after_sign_in(request, user, state.get("next"))
            if attempt.outcome is Outcome.THROTTLED:
                message = "throttled"
            else:
                form.wrong()
                second = {**state["second"], "tries": state["second"]["tries"] + 1}
                request.session[STATE] = {**state, "second": second}
        request.response.status_int = 429 if message == "throttled" else 400
    return {
        "form": form,
        "message": MESSAGES.get(message) if message else None,
        "warning": _lock_warning(
            request, request.service(ISignInService), state["identifier"]
        ),
        "identifier": Identifier(state["kind"], state["identifier"]).display,
    }


@view_config(route_name="login.not_mine", renderer="login/not_mine.jinja2")
def not_mine(request):
    """ "This is not my image": what it may mean, and whom to tell."""
    if request.session.get(STATE) is not None:
        del request.session[STATE]
    settings = request.registry.settings
    locale = request.locale_name
    return {
        "helpdesk_email": settings["idp.helpdesk.email"],
        "helpdesk_phone": settings["idp.helpdesk.phone"],
        "helpdesk_name": settings[f"idp.helpdesk.name.{locale}"],
    }


@view_config(
    route_name="login.logout",
    renderer="login/logout.jinja2",
    require_methods=["GET", "HEAD", "POST"],
)
def logout(request):
    """Sign out: GET asks, POST ends the IdP session."""
    if request.method != "POST":
        return {"signed_in": request.identity is not None}
    user = request.identity
    if user is not None:
        request.service(IAuditLog).record(
            "logout", subject_user_id=user.id, client_address=request.client_addr
        )
    row = request.session.row
    target = request.route_path("home")
    if user is not None and row is not None and row.participants:
        # Single logout started here: the services this session reached are
        # told on the status page.
        token = slo.start(
            request.dbsession, [row], settings=request.registry.settings, keep=row
        )
        metrics.slo_outcome("started")
        target = request.route_path("saml.slo.done", _query={"f": token})
    request.session.invalidate()
    forget_identity(request)
    return HTTPSeeOther(target)
