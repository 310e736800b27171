"""OPS-09: requests no decoder can read, through a real waitress on 127.0.0.1.

WebOb decodes the path and the query as UTF-8 whenever they are read, the
error page included, so ``/login?next=%FF`` used to end in waitress's plain
500 with none of the security headers. Every such request must get the
bilingual 400 page, with a reference and the headers of ``idp/tweens.py``;
each attack is paired with the same request carrying valid UTF-8.

Also here: a ``next`` outside Latin-1 after a successful sign-in, and the
answers waitress writes itself (413, 431, 400), whose headers the front
proxy adds (README, "Operating").
"""

from __future__ import annotations

import re

import pytest
import webtest
from sqlalchemy.orm import Session

from idp.requestlog import REFERENCE_PATTERN
from idp.tweens import BASE_HEADERS, CONTENT_SECURITY_POLICY, HSTS
from tests.app import ROOT, TEST_BASE_URL, TEST_HOST
from tests.factories import PASSWORD, display, make_user
from tests.served import WireProxy, exchange, request_bytes, serve, server_settings


@pytest.fixture
def port(app, db_engine):
    """The test app behind waitress, committing for real; emptied afterwards."""
    from idp.db import Base
    from idp.services.audit import audit_maintenance

    with serve(app) as port:
        yield port
    with db_engine.begin() as conn, audit_maintenance(conn):
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


def get(port: int, target: bytes, **kwargs):
    return exchange(port, request_bytes("GET", target, **kwargs))


def assert_bilingual_400(answer) -> None:
    assert answer.status == 400, (answer.status, answer.text[:300])
    assert answer.header("Content-Type").startswith("text/html")
    for name, value in BASE_HEADERS.items():
        assert answer.header(name) == value, name
    assert answer.header("Content-Security-Policy") == CONTENT_SECURITY_POLICY
    page = answer.text
    assert 'data-error-code="bad_request"' in page
    assert re.search(f'<code class="reference">{REFERENCE_PATTERN}</code>', page)
    # Both languages: the page's own and the other one's section.
    assert "Permintaan tidak dapat difahami" in page
    assert "The request could not be understood" in page
    assert "Traceback" not in page


# (attack, control): the control differs only in valid UTF-8 for the bad bytes.
UNDECODABLE = {
    "next": (b"/login?next=%FF", b"/login?next=%C3%A9"),
    "path": (b"/%FF", b"/%C3%A9"),
    "saml-request": (
        b"/saml/sso/redirect?SAMLRequest=%FF",
        b"/saml/sso/redirect?SAMLRequest=%C3%A9",
    ),
    "captcha": (b"/captcha/%FF.png", b"/captcha/%C3%A9.png"),
    "overlong-slash": (b"/login?next=%C0%AF", b"/login?next=%2F"),
    "surrogate": (b"/login?next=%ED%A0%80", b"/login?next=%ED%9F%BF"),
    "truncated": (b"/help?q=%E3%80", b"/help?q=%E3%80%82"),
    "query-name": (b"/login?%FF=1", b"/login?%C3%A9=1"),
    "path-overlong": (b"/saml%C0%AFsso", b"/saml%2Fsso"),
    "slo-post": (b"/saml/slo/post?x=%FE", b"/saml/slo/post?x=%C3%BE"),
}


@pytest.mark.parametrize("case", sorted(UNDECODABLE))
def test_ops_09_undecodable_path_or_query_gets_the_bilingual_400_page(port, case):
    """OPS-09: bad UTF-8 in the path or query: the 400 page, never a 500."""
    attack, control = UNDECODABLE[case]
    assert_bilingual_400(get(port, attack))
    answer = get(port, control)
    assert 0 < answer.status < 500
    assert 'data-error-code="bad_request"' not in answer.text


URLENCODED = b"application/x-www-form-urlencoded"
MULTIPART = b"multipart/form-data; boundary=b0undary"


def multipart(disposition: bytes, value: bytes = b"x") -> bytes:
    return (
        b"--b0undary\r\nContent-Disposition: form-data; "
        + disposition
        + b"\r\n\r\n"
        + value
        + b"\r\n--b0undary--\r\n"
    )


# (content type, body) for the attack, then for the control: the control is
# read and reaches the view, whose CSRF check refuses it (403).
UNREADABLE_FORMS = {
    "bad-utf8": ((URLENCODED, b"identifier=%FF"), (URLENCODED, b"identifier=%C3%A9")),
    "raw-bad-utf8": (
        (URLENCODED, b"identifier=\xc0\xaf"),
        (URLENCODED, b"identifier=/"),
    ),
    "latin-1-charset": (
        (URLENCODED + b"; charset=latin-1", b"identifier=1"),
        (URLENCODED + b"; charset=UTF-8", b"identifier=1"),
    ),
    "bad-boundary": (
        (b"multipart/form-data; boundary=\xff\xfe", multipart(b'name="a"')),
        (MULTIPART, multipart(b'name="a"')),
    ),
    "file-upload": (
        (MULTIPART, multipart(b'name="identifier"; filename="a.txt"')),
        (MULTIPART, multipart(b'name="identifier"')),
    ),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE_FORMS))
def test_ops_09_a_form_body_webob_cannot_read_gets_the_400_page(port, case):
    """OPS-09: a body that is not UTF-8, another charset, a bad boundary, a file: 400."""
    for (content_type, body), status in zip(
        UNREADABLE_FORMS[case], (400, 403), strict=True
    ):
        answer = exchange(
            port,
            request_bytes(
                "POST",
                b"/login",
                headers=(
                    (b"Content-Type", content_type),
                    (b"Origin", b"https://idp.test"),
                ),
                body=body,
            ),
        )
        assert answer.status == status, (content_type, body, answer.text[:200])
        if status == 400:
            assert_bilingual_400(answer)
        else:
            assert 'data-error-code="csrf"' in answer.text


def test_ops_09_the_400_page_keeps_the_chosen_language(port):
    """OPS-09: ``?lang=en`` beside the bad bytes still picks English first."""
    answer = get(port, b"/login?lang=en&next=%FF")
    assert_bilingual_400(answer)
    assert '<html lang="en">' in answer.text
    assert '<html lang="ms">' in get(port, b"/login?next=%FF").text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"Cookie", b"idp_lang=\xff\xfe; idp_session=%FF\xc0\xaf"),
        (b"Accept-Language", b"\xff\xfe;q=1"),
        (b"Referer", b"https://idp.test/\xff"),
        (b"Origin", b"https://idp.test\xff"),
        (b"User-Agent", b"\xc0\xaf\xed\xa0\x80"),
    ],
)
def test_ops_09_bad_bytes_in_a_header_change_nothing(port, name, value):
    """OPS-09: a header that is not UTF-8 is read as Latin-1: the page as usual."""
    answer = get(port, b"/login", headers=((name, value),))
    assert answer.status == 200, answer.text[:300]
    assert 'id="login-form"' in answer.text


def test_ops_09_a_next_outside_latin_1_survives_a_successful_sign_in(port, db_engine):
    """OPS-09: ``next=/。/x``: the sign-in ends in a 303 with the session cookie.

    The Location header is Latin-1 on the wire; the path is sent on
    percent-encoded as UTF-8, which is where the browser then goes.
    """
    with Session(db_engine) as session, session.begin():
        user = make_user(session)
        identifier = display(user)
    browser = webtest.TestApp(
        WireProxy(port),
        extra_environ={"HTTP_HOST": TEST_HOST, "wsgi.url_scheme": "https"},
    )
    for next_url, landing in [
        ("/%E3%80%82/x", f"{TEST_BASE_URL}/%E3%80%82/x"),
        ("/help", f"{TEST_BASE_URL}/help"),
    ]:
        form = browser.get(f"/login?lang=en&next={next_url}").forms["login-form"]
        form["identifier"] = identifier
        form = form.submit(status=303).follow().forms["image-form"]
        form["confirm"] = True
        form = form.submit(status=303).follow().forms["password-form"]
        form["password"] = PASSWORD
        done = form.submit(status=303)
        assert done.location == landing
        assert done.location.isascii()
        assert "idp_session" in done.headers.get("Set-Cookie", "")
        home = browser.get("/", headers={"Origin": TEST_BASE_URL})
        assert home.status_int == 200
        assert 'id="login-form"' not in home.text
        browser.reset()


# --------------------------------------------------------------------------
# Item 12: answers waitress writes itself.

README = ROOT / "README.md"


def proxy_headers_in_readme() -> dict[str, str]:
    """The headers the README's proxy section tells nginx to add."""
    text = README.read_text()
    section = text.split("### Headers the front proxy adds", 1)[1].split("\n## ", 1)[0]
    values = dict(
        re.findall(r'map \$upstream_http_\S+ \$(\S+) \{\n +"" +"([^"]*)";', section)
    )
    added = re.findall(r"add_header (\S+) \$(\S+) always;", section)
    return {name: values[variable] for name, variable in added}


def test_ops_09_readme_lists_every_tween_header_for_the_proxy():
    """OPS-09: the proxy's list is idp/tweens.py's, name for name, value for value."""
    expected = {**BASE_HEADERS, "Content-Security-Policy": CONTENT_SECURITY_POLICY}
    expected["Strict-Transport-Security"] = HSTS
    assert proxy_headers_in_readme() == expected


def test_ops_09_a_declared_body_over_the_limit_gets_the_apps_413_page(port, settings):
    """OPS-09/OPS-05: waitress lets the app refuse first, so the 413 has the headers.

    The app's cap (``idp.max_request_body``) is below waitress's
    ``max_request_body_size`` in the shipped ini files; a body between the two
    gets the bilingual 413 page with every security header.
    """
    app_cap = int(settings["idp.max_request_body"])
    waitress_cap = int(server_settings()["max_request_body_size"])
    assert waitress_cap > app_cap
    body = b"a=" + b"x" * (app_cap + 100)
    answer = exchange(
        port,
        request_bytes(
            "POST",
            b"/login",
            headers=((b"Content-Type", b"application/x-www-form-urlencoded"),),
            body=body,
        ),
    )
    assert answer.status == 413
    assert 'data-error-code="too_large"' in answer.text
    for name, value in BASE_HEADERS.items():
        assert answer.header(name) == value, name
    # The same body chunked: waitress counts it against its own cap and
    # hands the app its length, so the app's page answers here too.
    chunked = (
        b"POST /login HTTP/1.1\r\nHost: idp.test\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + f"{len(body):x}".encode()
        + b"\r\n"
        + body
        + b"\r\n0\r\n\r\n"
    )
    answer = exchange(port, chunked)
    assert answer.status == 413
    assert 'data-error-code="too_large"' in answer.text
    assert answer.header("X-Frame-Options") == "DENY"
    # The control: a small post reaches the view (and its CSRF check).
    small = exchange(
        port,
        request_bytes(
            "POST",
            b"/login",
            headers=((b"Content-Type", b"application/x-www-form-urlencoded"),),
            body=b"a=x",
        ),
    )
    assert small.status == 403
    assert 'data-error-code="csrf"' in small.text


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /login HTTP/1.1\r\nHost: idp.test\r\nX-Big: " + b"a" * 300000, 431),
        (b"GET /\xff HTTP/1.1\r\nHost: idp.test", 400),
    ],
)
def test_ops_09_what_only_waitress_can_answer_carries_no_app_headers(port, raw, status):
    """OPS-09: header limits and unparseable request lines are waitress's own.

    They never reach the app, so the headers must come from the front proxy
    (README): this test pins down that gap so a change in waitress shows.
    """
    answer = exchange(port, raw + b"\r\nConnection: close\r\n\r\n")
    assert answer.status == status
    assert answer.header("X-Frame-Options") is None
    assert "Traceback" not in answer.text
