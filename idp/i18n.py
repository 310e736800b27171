"""Languages: Bahasa Melayu first, English by choice.

The negotiator tries ``?lang=``, then the ``idp_lang`` cookie, then
``Accept-Language``, then ``ms``. A ``?lang=`` choice is remembered in the
cookie so the visible language switch works without a session.
"""

# What pyramid.i18n re-exports, taken from its source so that modules naming
# messages (identifiers, the log filter) do not import Pyramid: idp-admin's
# database commands never need it.
from translationstring import TranslationStringFactory

DOMAIN = "idp"
LOCALES = ("ms", "en")
DEFAULT_LOCALE = "ms"
COOKIE_NAME = "idp_lang"
COOKIE_MAX_AGE = 365 * 24 * 3600

_ = TranslationStringFactory(DOMAIN)


def _supported(value):
    if not value:
        return None
    value = value.strip().lower().replace("_", "-").split("-")[0]
    return value if value in LOCALES else None


def negotiate_locale(request):
    chosen = _supported(request.GET.get("lang"))
    if chosen:
        return chosen
    chosen = _supported(request.cookies.get(COOKIE_NAME))
    if chosen:
        return chosen
    return request.accept_language.lookup(LOCALES, default=DEFAULT_LOCALE)


def _remember_choice(event):
    request = event.request
    chosen = _supported(request.GET.get("lang"))
    if chosen and request.cookies.get(COOKIE_NAME) != chosen:
        event.response.set_cookie(
            COOKIE_NAME,
            chosen,
            max_age=COOKIE_MAX_AGE,
            httponly=True,
            secure=request.scheme == "https",
            samesite="Lax",
        )


def _add_renderer_globals(event):
    request = event.get("request")
    if request is not None:
        event["translate"] = request.localizer.translate
        event["locale"] = request.locale_name


def includeme(config):
    from pyramid.events import BeforeRender, NewResponse

    config.add_translation_dirs("idp:locale/")
    config.set_locale_negotiator(negotiate_locale)
    config.add_subscriber(_remember_choice, NewResponse)
    config.add_subscriber(_add_renderer_globals, BeforeRender)
    config.add_request_method(
        lambda request: request.localizer.translate, "_", reify=True
    )


def translate_in(request, message, locale: str) -> str:
    """Translate ``message`` into ``locale``, whatever the request's language.

    Error pages and bilingual mail show both languages at once.
    """
    from pyramid.i18n import make_localizer
    from pyramid.interfaces import ITranslationDirectories

    cache = request.registry.setdefault("idp.localizers", {})
    localizer = cache.get(locale)
    if localizer is None:
        directories = request.registry.queryUtility(ITranslationDirectories) or []
        localizer = cache[locale] = make_localizer(locale, directories)
    return localizer.translate(message)


def other_locale(locale: str) -> str:
    return "en" if locale == "ms" else "ms"
