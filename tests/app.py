"""The app as the tests build it: settings, the WSGI app, a request's environ.

``conftest.py`` builds its session fixtures from these; a test that needs a
second app (the captcha on, a rate limit low, another mail backend) calls
``make_app`` with its own settings, and ``environ`` gives its ``TestApp``
the test's transaction and database session, as the ``testapp`` fixture has
(``browser`` opens one; ``committing_browser`` one whose requests commit).
``captcha_answer`` reads an app's image captcha as a person would;
``app_request`` makes a request outside WSGI as the app would.
"""

from __future__ import annotations

from pathlib import Path

import webtest
from pyramid.paster import get_appsettings

from idp.config import configure

ROOT = Path(__file__).resolve().parent.parent
DEVELOPMENT_INI = ROOT / "development.ini"
TEST_HOST = "idp.test"
TEST_BASE_URL = f"https://{TEST_HOST}"


def base_settings(tmp: Path) -> dict:
    """development.ini (so the shipped ini stays tested) plus test overrides."""
    settings = dict(get_appsettings(str(DEVELOPMENT_INI), name="main"))
    settings.update(
        {
            "idp.base_url": TEST_BASE_URL,
            "idp.allowed_hosts": "",
            "idp.bcrypt_rounds": "4",
            "idp.certs_dir": str(tmp / "certs"),
            "idp.metadata_dir": str(tmp / "metadata"),
            "idp.auto_create_keys": "false",
            "idp.key_size": "2048",
            "captcha.enabled": "false",
            "mail.backend": "idp.services.delivery.MemorySender",
            "mail.deliver_in_process": "false",
            "pyramid.reload_templates": "false",
        }
    )
    return settings


def make_app(settings: dict, engine, *includes: str):
    """The app on ``engine``, with ``includes`` (e.g. ``tests.probe``) added."""
    config = configure({**settings, "idp.dbengine": engine})
    for include in includes:
        config.include(include)
    config.commit()
    return config.make_wsgi_app()


def app_request(registry, path: str = "/", **environ):
    """A request made as the app makes its own: of the registry's request
    class (``idp.config.bake_request_properties``, which carries every
    ``add_request_method`` property), with the app's request methods.
    A bare ``pyramid.request.Request`` would lack the properties."""
    from pyramid.interfaces import IRequestFactory
    from pyramid.request import Request, apply_request_extensions

    factory = registry.queryUtility(IRequestFactory, default=Request)
    request = factory.blank(path, environ=environ or None)
    request.registry = registry
    apply_request_extensions(request)
    return request


CLIENT_ADDRESS = "192.0.2.10"


def site_environ(address: str = CLIENT_ADDRESS) -> dict:
    """A browser on the test host over https, from ``address``."""
    return {
        "HTTP_HOST": TEST_HOST,
        "HTTP_ORIGIN": TEST_BASE_URL,
        "wsgi.url_scheme": "https",
        "REMOTE_ADDR": address,
    }


def environ(tm, dbsession, **extra) -> dict:
    """A browser on the test host whose requests join the test's transaction."""
    return {
        **site_environ(),
        "tm.active": True,
        "tm.manager": tm,
        "idp.dbsession": dbsession,
        **extra,
    }


def committing_browser(app, address: str = CLIENT_ADDRESS) -> webtest.TestApp:
    """A browser whose requests run the app's own transactions: each commits
    or aborts for real, as in production (no test transaction to join)."""
    return webtest.TestApp(app, extra_environ=site_environ(address))


def browser(app, tm, dbsession, address: str = CLIENT_ADDRESS) -> webtest.TestApp:
    """Another browser (its own cookies) at ``address``, in the test's transaction."""
    return webtest.TestApp(
        app, extra_environ=environ(tm, dbsession, REMOTE_ADDR=address)
    )


def captcha_answer(app, token: str) -> str:
    """What a person reads in the image captcha ``token`` of ``app``."""
    from idp.services.captcha import ImageCaptcha

    settings = app.registry.settings
    return ImageCaptcha(
        None, settings["idp.hmac_key"], enabled=True, lifetime=60
    ).answer(token)
