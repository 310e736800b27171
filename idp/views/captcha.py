"""The captcha's picture and sound, fetched by the form that shows them.

Both count against ``captcha.address``, as issuing a challenge does; past
the limit any of them gets the bilingual 429 page below (AUTH-25).
"""

import logging

from pyramid.httpexceptions import HTTPNotFound
from pyramid.response import Response
from pyramid.view import exception_view_config, view_config

from idp.i18n import LOCALES, _
from idp.services.captcha import CaptchaFlood
from idp.services.interfaces import ICaptchaService
from idp.views.errors import render_error

log = logging.getLogger(__name__)

FLOOD_PAGE = (
    "too_many_requests",
    _("Too many requests"),
    _(
        "Too many security checks were asked for from your network. "
        "Please wait a while and try again."
    ),
)


def show_challenge(request, form, purpose: str) -> dict:
    """Put a fresh challenge for ``purpose`` in ``form``; the template's values.

    Any answer typed before is cleared. A hosted provider's widget loads its
    script and frame from the provider, so the page's policy admits them.
    """
    captcha = request.service(ICaptchaService)
    form.captcha_answer.data = ""
    form.captcha_token.data = captcha.new_challenge(purpose) if captcha.enabled else ""
    if captcha.enabled:
        request.csp.merge(captcha.csp)
    return {"captcha_enabled": captcha.enabled, "captcha_widget": captcha.widget}


def _media(body: bytes | None, content_type: str) -> Response:
    if body is None:
        raise HTTPNotFound()
    response = Response(body=body, content_type=content_type)
    response.cache_control = "no-store"
    return response


@view_config(route_name="captcha.image")
def image(request):
    captcha = request.service(ICaptchaService)
    return _media(captcha.image(request.matchdict["token"]), "image/png")


@view_config(route_name="captcha.audio")
def audio(request):
    captcha = request.service(ICaptchaService)
    locale = request.matchdict["locale"]
    if locale not in LOCALES:
        raise HTTPNotFound()
    body = captcha.audio(request.matchdict["token"], locale)
    return _media(body, "audio/wav")


@exception_view_config(CaptchaFlood, renderer="errors/error.jinja2")
def flood(exc, request):
    reference, values = render_error(
        request, 429, FLOOD_PAGE, headers={"Retry-After": str(exc.retry_after)}
    )
    log.warning(
        "captcha limit reached on %s %s [%s]", request.method, request.path, reference
    )
    return values
