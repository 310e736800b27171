"""Registration: "Daftar Baharu".

GET shows the form; POST checks the captcha and every field and either
re-renders the form (400, every error beside its field, everything typed
kept except the captcha) or creates the account and redirects to the same
"check your email" page whether or not the details were already registered.
The "Set Semula" (reset) button posts ``action=reset`` and gets an empty form.
"""

from pyramid.httpexceptions import HTTPSeeOther
from pyramid.view import view_config

from idp import security_images
from idp.forms import mark_captcha_wrong
from idp.forms.register import (
    CATEGORIES,
    ID_TYPES,
    OPTIONAL_INSTITUTION,
    RegisterForm,
    country_choices,
    institution_required,
)
from idp.redirects import safe_next
from idp.services.interfaces import ICaptchaService, IRateLimiter, IUserService
from idp.services.security_image import suggestion
from idp.views.captcha import show_challenge
from idp.views.help import helpdesk


def _page(request, form: RegisterForm, next_url: str | None) -> dict:
    return {
        "form": form,
        "categories": [(c.value, request._(text)) for c, text in CATEGORIES.items()],
        "id_types": [(value, request._(text)) for value, text in ID_TYPES.items()],
        "countries": country_choices(request.locale_name),
        "images": security_images.CATALOGUE,
        "institution_required": institution_required(form.category.data),
        "institution_optional_for": sorted(c.value for c in OPTIONAL_INSTITUTION),
        **show_challenge(request, form, "register"),
        "next": next_url,
    }


@view_config(
    route_name="register.index",
    renderer="register/index.jinja2",
    require_methods=["GET", "HEAD", "POST"],
)
def index(request):
    # Someone who came from the sign-in page on their way to a service: the
    # sign-in after registering goes on to it (issue 12 item 1).
    next_url = safe_next(request.params.get("next"))
    again = {"next": next_url} if next_url else {}
    if request.method != "POST":
        # A suggested phrase from the decoy generator: many people keep it,
        # which puts real phrases and decoys in one distribution (AUTH-26).
        return _page(request, RegisterForm(security_phrase=suggestion()), next_url)
    if request.POST.get("action") == "reset":
        return HTTPSeeOther(request.route_path("register.index", _query=again))

    form = RegisterForm(request.POST)
    captcha = request.service(ICaptchaService)
    # The captcha is checked (and consumed) first, whatever the other fields
    # say, so one solved challenge cannot be replayed against a form error.
    captcha_ok = captcha.check(request.POST, request.client_addr, purpose="register")
    valid = form.validate()
    if not captcha_ok:
        mark_captcha_wrong(form, captcha.kind)
    if not (valid and captcha_ok):
        request.response.status_code = 400
        return _page(request, form, next_url)

    limiter = request.service(IRateLimiter)
    if not limiter.hit("register.address", request.client_addr).allowed:
        request.response.status_int = 429
        page = _page(request, form, next_url)
        page["throttled"] = True
        return page
    users = request.service(IUserService)
    users.register(form.registration(request.locale_name))
    return HTTPSeeOther(request.route_path("register.done", _query=again))


@view_config(route_name="register.done", renderer="register/done.jinja2")
def done(request):
    settings = request.registry.settings
    return {
        "hours": settings["idp.temporary_password_hours"],
        "next": safe_next(request.GET.get("next")),
        # For someone whose first registration went to a mistyped address:
        # the same words for everyone, so the page reveals nothing (AUTH-05).
        "helpdesk": helpdesk(settings, request.locale_name),
    }
