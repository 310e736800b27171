"""The application, assembled in the order it is read: a table of contents."""

from pyramid.config import Configurator
from pyramid_retry import RetryableExecutionPolicy

from idp.settings import parse_settings


def _settings(settings) -> dict:
    settings = parse_settings(settings or {})
    settings.setdefault("jinja2.i18n.domain", "idp")
    settings.setdefault("jinja2.autoescape", "true")
    settings.setdefault("jinja2.filters", "")
    settings.setdefault("retry.attempts", "3")
    settings.setdefault("tm.manager_hook", "pyramid_tm.explicit_manager")
    settings.setdefault("tm.annotate_user", "false")
    settings.setdefault("pyramid.default_locale_name", "ms")
    return settings


def configure(settings=None) -> Configurator:
    config = Configurator(settings=_settings(settings))
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
    config.include(".csp")
    config.include(".authz")
    config.include(".services")
    config.include(".saml")
    config.include(".routes")
    config.scan("idp.views")
    config.include(".requestlog")
    config.include(".dbfaults")
    config.include(".queuing")
    config.include(".tweens")
    config.commit()
    # After pyramid_retry's own registration, so this one wraps it.
    attempts = int(config.get_settings()["retry.attempts"])
    config.set_execution_policy(closing_input(RetryableExecutionPolicy(attempts)))
    config.commit()
    bake_request_properties(config.registry)
    return config


def configure_services(settings=None) -> Configurator:
    """The app without its web face, for ``idp-admin``.

    The same settings, database wiring, translations and services as
    :func:`configure`, so a command changes data exactly as a request does;
    none of the SAML server, keys, views, routes or tweens, which cost a
    command a second of start-up and would make it need the signing key. A
    command never starts the in-process mail thread: it queues mail, and
    ``mail deliver`` sends it.
    """
    config = Configurator(
        settings={**_settings(settings), "mail.deliver_in_process": False}
    )
    config.include("pyramid_services")
    config.include("pyramid_tm")
    config.include(".db")
    config.include(".i18n")
    config.include(".services")
    config.commit()
    return config


def bake_request_properties(registry) -> None:
    """Give requests one class that has every ``add_request_method`` property.

    Pyramid applies a property or reified request method
    (``request.dbsession``, ``request.tm``, ``request.csp``...) by making a
    new subclass of the request class for every request. Creating a class
    costs more than everything a tween does, leaves a cycle for the garbage
    collector, and starts every attribute lookup on the request from an
    empty type cache: about 30 us of an SSO. Here the subclass is made once,
    at start-up, with the same descriptors (a reified value is still cached
    on each request instance), and becomes the request factory; Pyramid then
    has no property left to apply per request, only the plain methods. A
    property added later (a test's ``add_request_method``) still works
    Pyramid's way, on top.
    """
    from pyramid.interfaces import IRequestExtensions, IRequestFactory
    from pyramid.request import Request

    extensions = registry.queryUtility(IRequestExtensions)
    if extensions is None or not extensions.descriptors:
        return
    base = registry.queryUtility(IRequestFactory, default=Request)
    attrs = {**extensions.descriptors, "__module__": base.__module__}
    baked = type(base.__name__, (base,), attrs)
    # As Pyramid's per-request subclass does: the interfaces of the base are
    # the class's own, so adapter lookups treat it as the base.
    for name in ("__implemented__", "__provides__"):
        if hasattr(base, name):
            setattr(baked, name, getattr(base, name))
    registry.registerUtility(baked, IRequestFactory)
    extensions.descriptors = {}


def closing_input(policy):
    """An execution policy that closes the request body copy ``policy`` made.

    pyramid_retry makes the body seekable so it can replay it; above 10 KiB
    WebOb copies it into a temporary file that nothing closes, so every
    large POST (a SAMLRequest, an upload) would leak a file descriptor
    until the garbage collector finds it.
    """

    def execute(environ, router):
        original = environ.get("wsgi.input")
        try:
            return policy(environ, router)
        finally:
            body = environ.get("wsgi.input")
            if body is not original and hasattr(body, "close"):
                body.close()

    return execute
