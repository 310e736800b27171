"""The application, assembled in the order it is read: a table of contents."""

from pyramid.config import Configurator

from idp.settings import parse_settings


def configure(settings=None) -> Configurator:
    settings = parse_settings(settings or {})
    settings.setdefault("jinja2.i18n.domain", "idp")
    settings.setdefault("jinja2.autoescape", "true")
    settings.setdefault("jinja2.filters", "")
    settings.setdefault("retry.attempts", "3")
    settings.setdefault("tm.manager_hook", "pyramid_tm.explicit_manager")
    settings.setdefault("tm.annotate_user", "false")
    settings.setdefault("pyramid.default_locale_name", "ms")

    config = Configurator(settings=settings)
    config.include("pyramid_services")
    config.include(".csrf")
    config.include(".jinja2")
    config.include("pyramid_jinja2")
    config.include("pyramid_retry")
    config.include("pyramid_tm")
    config.include(".db")
    config.include(".i18n")
    config.include(".sessions")
    config.include(".security")
    config.include(".authz")
    config.include(".services")
    config.include(".saml")
    config.include(".routes")
    config.scan("idp.views")
    config.include(".tweens")
    config.commit()
    return config
