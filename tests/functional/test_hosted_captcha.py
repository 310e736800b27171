"""A hosted captcha (Turnstile, hCaptcha, reCAPTCHA) instead of the image one.

The provider is played by a small siteverify server on 127.0.0.1 that
answers like the real ones: success only for the token its widget would
have issued, and the hostname of the site it was issued for.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
import webtest
from sqlalchemy import func, select

from idp.models import User
from idp.services.captcha import PROVIDERS, SiteVerifyCaptcha
from tests.app import TEST_HOST, environ, make_app
from tests.registration import fill, open_form

SECRET = "provider-secret-for-tests"
GOOD = "token-the-widget-issued"


class Provider(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.posts: list[dict] = []
        self.hostname = TEST_HOST
        self.down = False
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/siteverify"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers["Content-Length"])
        fields = {
            k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()
        }
        self.server.posts.append(fields)
        if self.server.down:
            self.send_response(503)
            self.end_headers()
            return
        ok = fields.get("secret") == SECRET and fields.get("response") == GOOD
        body = {"success": ok, "hostname": self.server.hostname}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        """Keep the test output free of access-log lines."""


@pytest.fixture(scope="module")
def provider():
    server = Provider()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def turnstile_app(settings, db_engine, provider):
    return make_app(
        {
            **settings,
            "captcha.enabled": "true",
            "captcha.backend": "turnstile",
            "captcha.site_key": "0x4AAAAAAA-site-key",
            "captcha.secret": SECRET,
            "captcha.verify_url": provider.url,
        },
        db_engine,
    )


@pytest.fixture
def browser(turnstile_app, tm, dbsession, provider):
    provider.posts.clear()
    provider.hostname = TEST_HOST
    provider.down = False
    return webtest.TestApp(turnstile_app, extra_environ=environ(tm, dbsession))


def users(dbsession) -> int:
    return dbsession.scalar(select(func.count()).select_from(User))


def submit(browser, response: str | None):
    form = fill(open_form(browser, "en"))
    fields = [(name, value) for name, value in form.submit_fields()]
    if response is not None:
        fields.append(("cf-turnstile-response", response))
    return browser.post("/register", fields, expect_errors=True)


def test_the_page_carries_the_widget_and_a_csp_that_allows_it(browser):
    page = browser.get("/register?lang=en")
    widget = page.html.select_one(".cf-turnstile")
    assert widget["data-sitekey"] == "0x4AAAAAAA-site-key"
    scripts = [tag["src"] for tag in page.html.select("script[src]")]
    assert PROVIDERS["turnstile"].script_url in scripts
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self' https://challenges.cloudflare.com" in csp
    assert "frame-src 'self' https://challenges.cloudflare.com" in csp
    assert "frame-ancestors 'none'" in csp
    assert "captcha_answer" not in page.forms["register-form"].fields
    # Other pages keep the strict policy.
    assert "cloudflare" not in browser.get("/").headers["Content-Security-Policy"]


def test_a_token_the_provider_accepts_registers(browser, dbsession, provider):
    assert submit(browser, GOOD).status_int == 303
    assert users(dbsession) == 1
    (post,) = provider.posts
    assert post == {"secret": SECRET, "response": GOOD, "remoteip": "192.0.2.10"}


@pytest.mark.parametrize("response", ["forged-token", "", None])
def test_auth_20_a_refused_or_missing_token_is_a_wrong_answer(
    browser, dbsession, response
):
    """AUTH-20: with a hosted captcha too, a missing token fails like a wrong one."""
    page = submit(browser, response)
    assert page.status_int == 400
    assert users(dbsession) == 0
    assert "Complete the check that shows you are not a robot" in page.text


def test_a_token_issued_for_another_site_is_refused(browser, dbsession, provider):
    provider.hostname = "phishing.example"
    assert submit(browser, GOOD).status_int == 400
    assert users(dbsession) == 0


def test_an_unreachable_provider_fails_closed(browser, dbsession, provider):
    provider.down = True
    assert submit(browser, GOOD).status_int == 400
    assert users(dbsession) == 0


def test_unreachable_address_fails_closed_quickly():
    captcha = SiteVerifyCaptcha(
        "hcaptcha",
        site_key="k",
        secret=SECRET,
        hostname=TEST_HOST,
        verify_url="http://127.0.0.1:9/siteverify",
        timeout=2,
    )
    assert captcha.check({"h-captcha-response": GOOD}, "192.0.2.10") is False
