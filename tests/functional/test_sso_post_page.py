"""The HTTP-POST binding page, rendered once per language and filled per SSO."""

from __future__ import annotations

import pytest
from pyramid.request import Request
from pyramid.threadlocal import manager
from pyramid_jinja2 import IJinja2Environment

from idp.views import saml as views
from tests.app import app_request

HOSTILE = {
    "acs_url": 'https://sp.example.org/acs?a=1&b="><script>alert(1)</script>',
    "saml_response": "PHNhbWxwOlJlc3BvbnNlLz4=<'\"&>",
    "relay_state": "\x00relay_state\x00 '\"><img src=x onerror=alert(1)>&amp;",
    "nonce": "n\x00nonce\x00<b>",
}


def _request(app, locale: str) -> Request:
    request = app_request(app.registry, "/saml/sso/redirect")
    request.__dict__["locale_name"] = locale
    return request


@pytest.mark.parametrize("locale", ["ms", "en"])
@pytest.mark.parametrize("relay_state", [True, False], ids=["relay-state", "none"])
def test_saml_22_the_filled_page_is_the_page_jinja2_renders(app, locale, relay_state):
    """SAML-22: every value is escaped exactly as Jinja2's autoescape would
    (the page is the template rendered with the same values, byte for byte),
    stand-ins inside a value are text like any other, and nothing hostile
    comes through unescaped."""
    values = dict(HOSTILE, relay_state=HOSTILE["relay_state"] if relay_state else None)
    request = _request(app, locale)
    manager.push({"request": request, "registry": app.registry})
    try:
        filled = views._post_page(request, relay_state).fill(**values)
        environment = app.registry.getUtility(IJinja2Environment, name=".jinja2")
        rendered = environment.get_template("saml/post.jinja2").render(
            request=request, **values
        )
    finally:
        manager.pop()
    assert filled == rendered
    assert "<script>alert" not in filled and "<img" not in filled
    assert ('name="RelayState"' in filled) is relay_state
    continue_ms, continue_en = "Teruskan", "Continue"
    assert (continue_ms if locale == "ms" else continue_en) in filled


def test_each_language_renders_once_and_is_kept(app, monkeypatch):
    rendered = []
    original = views._PostPage.__init__

    def counting(self, request, with_relay_state):
        rendered.append((request.locale_name, with_relay_state))
        original(self, request, with_relay_state)

    monkeypatch.setattr(views._PostPage, "__init__", counting)
    monkeypatch.setitem(app.registry, views._POST_PAGES, {})
    for locale in ("ms", "en", "ms", "en", "ms"):
        request = _request(app, locale)
        manager.push({"request": request, "registry": app.registry})
        try:
            first = views._post_page(request, True).fill(**HOSTILE)
            second = views._post_page(request, True).fill(**dict(HOSTILE, nonce="x"))
        finally:
            manager.pop()
        assert first != second  # the values are this call's
    assert rendered == [("ms", True), ("en", True)]
