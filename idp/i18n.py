"""Languages: Bahasa Melayu first, English by choice.

The negotiator tries ``?lang=``, then the ``idp_lang`` cookie, then ``ms``.
A ``?lang=`` choice is remembered in the cookie so the visible language
switch works without a session. The browser's ``Accept-Language`` is not
consulted: Malay is the service's language, English is offered on every page
and kept once chosen (issue 12), so a browser set up in English still shows
a Malay page first.
"""

from urllib.parse import urlencode

# What pyramid.i18n re-exports, taken from its source so that modules naming
# messages (identifiers, the log filter) do not import Pyramid: idp-admin's
# database commands never need it.
from translationstring import TranslationString, TranslationStringFactory

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


def _asked(request) -> str | None:
    """The supported ``?lang=`` of the request, if any."""
    try:
        return _supported(request.GET.get("lang"))
    except UnicodeDecodeError:
        # A query that is not UTF-8 gets an error page, in a language.
        return None


def negotiate_locale(request):
    chosen = _asked(request)
    if chosen:
        return chosen
    chosen = _supported(request.cookies.get(COOKIE_NAME))
    return chosen or DEFAULT_LOCALE


def switch_url(request, locale: str) -> str:
    """This page in ``locale``: its path and query, with ``lang`` replaced.

    Keeping the rest of the query keeps a ``next`` address or a link's
    parameters when a person changes language half-way through a flow. A
    SAML endpoint's query is a one-time protocol message (SAMLRequest,
    RelayState, a continuation id): the switch never repeats it, which would
    only replay the request and echo the partner's RelayState into a link.
    """
    if request.path.startswith("/saml/"):
        return request.path + "?" + urlencode([("lang", locale)])
    try:
        query = [(key, value) for key, value in request.GET.items() if key != "lang"]
    except UnicodeDecodeError:
        # A query that is not UTF-8 is refused elsewhere; its error page
        # still offers the other language.
        query = []
    return request.path + "?" + urlencode([*query, ("lang", locale)])


def _remember_choice(event):
    request = event.request
    chosen = _asked(request)
    if chosen and request.cookies.get(COOKIE_NAME) != chosen:
        event.response.set_cookie(
            COOKIE_NAME,
            chosen,
            max_age=COOKIE_MAX_AGE,
            httponly=True,
            secure=request.scheme == "https",
            samesite="Lax",
        )


def _template_translate(localizer):
    """``translate`` in templates; a plain string is looked up as one of ours.

    Flash messages come back from the session (stored as JSON) as plain
    strings, without the ``idp`` domain of the TranslationString they were:
    without this they showed in English whatever the language.
    """

    def translate(message, *args, **kwargs):
        if isinstance(message, str) and not isinstance(message, TranslationString):
            message = TranslationString(message, domain=DOMAIN)
        return localizer.translate(message, *args, **kwargs)

    return translate


def _add_renderer_globals(event):
    request = event.get("request")
    if request is not None:
        event["translate"] = _template_translate(request.localizer)
        event["locale"] = request.locale_name
        event["switch_url"] = lambda locale: switch_url(request, locale)


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
