"""The captcha's picture and sound, fetched by the form that shows them."""

from pyramid.httpexceptions import HTTPNotFound
from pyramid.response import Response
from pyramid.view import view_config

from idp.i18n import LOCALES
from idp.services.interfaces import ICaptchaService


def _media(body: bytes | None, content_type: str) -> Response:
    if body is None:
        raise HTTPNotFound()
    response = Response(body=body, content_type=content_type)
    response.cache_control = "no-store"
    return response


@view_config(route_name="captcha.image")
def image(request):
    captcha = request.find_service(ICaptchaService, context=None)
    return _media(captcha.image(request.matchdict["token"]), "image/png")


@view_config(route_name="captcha.audio")
def audio(request):
    captcha = request.find_service(ICaptchaService, context=None)
    locale = request.matchdict["locale"]
    if locale not in LOCALES:
        raise HTTPNotFound()
    body = captcha.audio(request.matchdict["token"], locale)
    return _media(body, "audio/wav")
