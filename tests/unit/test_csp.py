"""idp.csp: one request-scoped policy, widened by pages, never loosened, sent once."""

from __future__ import annotations

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPSeeOther

from idp.csp import BASE, BASE_HEADER, FIXED, ContentSecurityPolicy
from idp.tweens import CONTENT_SECURITY_POLICY


def directives(header: str) -> dict[str, list[str]]:
    parsed = {}
    for part in header.split(";"):
        name, *sources = part.split()
        assert name not in parsed, f"{name} twice"
        parsed[name] = sources
    return parsed


def test_the_base_header_is_todays_policy():
    assert (
        BASE_HEADER
        == CONTENT_SECURITY_POLICY
        == (
            "default-src 'self'; script-src 'self'; style-src 'self'; "
            "img-src 'self' data: https:; font-src 'self'; connect-src 'self'; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
            "form-action 'self'"
        )
    )


def test_additions_from_two_places_merge():
    policy = ContentSecurityPolicy()
    # A hosted captcha's widget, then the page's own nonce'd script and form.
    policy.merge(
        {
            "script-src": ["https://js.hcaptcha.com"],
            "frame-src": ["https://hcaptcha.com"],
        }
    )
    policy.add("script-src", "'nonce-abc'", "https://js.hcaptcha.com")
    policy.add("form-action", "https://sp.example.org")
    parsed = directives(str(policy))
    assert parsed["script-src"] == ["'self'", "https://js.hcaptcha.com", "'nonce-abc'"]
    assert parsed["form-action"] == ["'self'", "https://sp.example.org"]
    # A directive the base leaves to default-src starts from what it gave.
    assert parsed["frame-src"] == ["'self'", "https://hcaptcha.com"]
    # Base order first, new directives after, as the header always had them.
    assert list(parsed) == [*BASE, "frame-src"]


@pytest.mark.parametrize(
    ("directive", "source"),
    [
        ("script-src", "'unsafe-inline'"),
        ("script-src", "'UNSAFE-EVAL'"),
        ("style-src", "'unsafe-inline'"),
        ("script-src", "'strict-dynamic'"),
        ("connect-src", "*"),
        ("img-src", "*.example.org"),
        ("script-src", "https:"),
        ("script-src", "data:"),
        ("form-action", "https://a.example.org https://b.example.org"),
        ("form-action", "https://sp.example.org; script-src *"),
        ("form-action", ""),
        ("default-src", "https://cdn.example.org"),
        ("object-src", "https://cdn.example.org"),
        ("base-uri", "https://cdn.example.org"),
        ("frame-ancestors", "https://evil.example.org"),
        ("frame-ancestors", "'self'"),
    ],
)
def test_no_addition_loosens_the_base(directive, source):
    policy = ContentSecurityPolicy()
    with pytest.raises(ValueError, match="CSP"):
        policy.add(directive, source)
    # Refused whole: nothing of it was kept.
    assert str(policy) == BASE_HEADER


def test_the_base_survives_every_addition():
    policy = ContentSecurityPolicy()
    for name in BASE:
        if name not in FIXED and BASE[name] != ("'none'",):
            policy.add(name, "https://one.example.org", "'nonce-n'")
    parsed = directives(str(policy))
    for name, sources in BASE.items():
        assert parsed[name][: len(sources)] == list(sources), name
    for name in FIXED | {"frame-ancestors"}:
        assert parsed[name] == list(BASE[name]), name


def test_framing_opens_only_to_the_site_itself():
    policy = ContentSecurityPolicy()
    policy.allow_framing_by_self()
    assert directives(str(policy))["frame-ancestors"] == ["'self'"]


def test_a_policy_of_its_own_for_a_file():
    policy = ContentSecurityPolicy({"default-src": ["'none'"], "sandbox": []})
    assert str(policy) == "default-src 'none'; sandbox"


# Through the tween: a small app with the IdP's CSP wiring and headers tween.


def _captcha_widget(request) -> None:
    request.csp.add("script-src", "https://js.hcaptcha.com")


@pytest.fixture
def app():
    config = Configurator(settings={"idp.development": True})
    config.include("idp.csp")
    config.add_tween("idp.tweens.security_headers_tween_factory")

    def page(request):
        _captcha_widget(request)
        request.csp.add("form-action", "https://sp.example.org")
        request.response.text = "page"
        return request.response

    def redirect(request):
        request.csp.add("form-action", "https://sp.example.org")
        return HTTPSeeOther("/page")

    def failing(request):
        request.csp.add("form-action", "https://sp.example.org")
        raise LookupError("no such thing")

    def error_page(exc, request):
        request.response.status_int = 404
        return request.response

    for name, view in (("page", page), ("redirect", redirect), ("failing", failing)):
        config.add_route(name, f"/{name}")
        config.add_view(view, route_name=name)
    config.add_exception_view(error_page, context=LookupError)
    return webtest.TestApp(config.make_wsgi_app())


def test_two_places_in_one_request_merge_into_one_header(app):
    header = app.get("/page").headers["Content-Security-Policy"]
    parsed = directives(header)
    assert parsed["script-src"] == ["'self'", "https://js.hcaptcha.com"]
    assert parsed["form-action"] == ["'self'", "https://sp.example.org"]
    assert parsed["frame-ancestors"] == ["'none'"]


def test_a_response_the_page_did_not_render_gets_the_base(app):
    """A redirect, or an error page answering instead, is not the page that
    needed the additions."""
    assert app.get("/redirect", status=303).headers["Content-Security-Policy"] == (
        BASE_HEADER
    )
    assert app.get("/failing", status=404).headers["Content-Security-Policy"] == (
        BASE_HEADER
    )
    # The control: the policy is per request, so the next page starts afresh.
    assert app.get("/page").headers["Content-Security-Policy"] != BASE_HEADER
    assert (
        app.get("/redirect", status=303).headers["Content-Security-Policy"]
        == BASE_HEADER
    )
