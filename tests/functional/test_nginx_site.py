"""The shipped nginx site, run: real nginx in front of two stub web nodes.

Each test is the attack first (what a client would send through the proxy
to reach past it), then what the site makes of it. The nodes are stubs
(``tests.nginx_site.StubNode``) that record what reaches them, so what
nginx passes on, retries or answers itself is seen exactly;
``deploy/rehearse`` (tests/functional/test_rehearse.py) runs the same site
in front of the real app.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from idp import csp
from idp.tweens import BASE_HEADERS, HSTS
from tests.nginx_site import (
    HOST,
    OWN_HEADERS,
    Nginx,
    Ports,
    Seen,
    StubNode,
    prepare,
)
from tests.smtp import free_port, make_certificate

APP_DEFAULTS = {
    **BASE_HEADERS,
    "Content-Security-Policy": csp.BASE_HEADER,
    "Strict-Transport-Security": HSTS,
}
MAX_BODY = 1048576


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    text: str

    def all(self, name: str) -> list[str]:
        return self.headers.get_all(name) or []


@dataclass
class Stack:
    nginx: Nginx
    seen: list[Seen]
    tls: ssl.SSLContext

    def ask(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Answer:
        connection = http.client.HTTPSConnection(
            HOST, self.nginx.ports.https, context=self.tls, timeout=10
        )
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Answer(
                response.status, response.headers, response.read().decode("utf-8")
            )
        finally:
            connection.close()


@contextlib.contextmanager
def stack(tmp_path: Path, live_nodes: int = 2) -> Iterator[Stack]:
    """nginx on the site, in front of ``live_nodes`` stubs (the rest refuse)."""
    seen: list[Seen] = []
    nodes = [StubNode(n, seen) for n in range(live_nodes)]
    ports = Ports(
        https=free_port(),
        http=free_port(),
        nodes=tuple(node.port for node in nodes)
        + tuple(free_port() for _ in range(2 - live_nodes)),
    )
    cert_file, key_file = make_certificate(tmp_path)
    tls = ssl.create_default_context(cafile=str(cert_file))
    server = Nginx(prepare(tmp_path / "nginx", ports, cert_file, key_file), ports)
    try:
        with server:
            yield Stack(server, seen, tls)
    finally:
        for node in nodes:
            node.stop()


def assert_nginx_page(answer: Answer, status: int, code: str) -> None:
    """nginx's own page: bilingual, with every header the app would send."""
    assert answer.status == status
    assert f'data-error-code="{code}"' in answer.text
    assert '<html lang="ms">' in answer.text and '<div lang="en">' in answer.text
    reference = re.search(r"<code>([0-9a-f]{32})</code>", answer.text)
    assert reference, "a reference the helpdesk can find in the access log"
    for name, value in APP_DEFAULTS.items():
        assert answer.all(name) == [value], name
    assert answer.all("Cache-Control") == ["no-store"]
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"


def test_auth_27_a_client_cannot_name_its_own_address_or_arrival(tmp_path):
    """AUTH-27/WEB-07: forged forwarding headers never reach a node.

    Attack: a script rotates ``X-Forwarded-For`` to dodge every per-address
    limit (or to pose as the monitoring host for /metrics), backdates
    ``X-Request-Start`` to get others' requests refused, or claims plain
    http. waitress trusts one proxy's headers, so each must be nginx's.
    """
    with stack(tmp_path) as s:
        before = time.time()
        answer = s.ask(
            "GET",
            "/login",
            headers={
                "X-Forwarded-For": "10.0.5.20",
                "X-Request-Start": "t=1.0",
                "X-Forwarded-Proto": "http",
                "X-Forwarded-Host": "evil.example",
                "Proxy": "http://evil.example:3128",
            },
        )
        assert answer.status == 200
        (got,) = s.seen
        assert got.headers["X-Forwarded-For"] == HOST
        assert got.headers["X-Forwarded-Proto"] == "https"
        assert got.headers["X-Forwarded-Host"] == f"{HOST}:{s.nginx.ports.https}"
        assert got.headers["Host"] == f"{HOST}:{s.nginx.ports.https}"
        assert "Proxy" not in got.headers
        started = float(got.headers["X-Request-Start"].removeprefix("t="))
        assert before - 1 <= started <= time.time() + 1
        # Answers a node wrote without security headers (waitress's own
        # 431/413/400) get every one of them, once.
        for name, value in APP_DEFAULTS.items():
            assert answer.all(name) == [value], name


def test_web_05_a_nodes_own_headers_are_neither_doubled_nor_replaced(tmp_path):
    """WEB-05/OPS-09: an app page keeps its own CSP and framing policy."""
    with stack(tmp_path) as s:
        answer = s.ask("GET", "/own-headers")
        # A path beside nginx's own pages is the app's too.
        beside = s.ask("GET", "/_idme/unavailable.html.x")
    assert answer.status == 200
    for name, value in OWN_HEADERS.items():
        assert answer.all(name) == [value], name
    # nginx adds no caching or retry advice to the app's answers.
    for page in (answer, beside):
        assert page.status == 200
        assert page.all("Cache-Control") == [] and page.all("Retry-After") == []


@pytest.mark.parametrize(
    "path",
    [
        "/metrics",
        "/metrics/",
        "/metrics?name[]=idme_sso_total",
        "/%6Detrics",
        "//metrics",
        "/static/../metrics",
        "/./metrics",
    ],
)
def test_metrics_never_reaches_a_node_through_the_proxy(tmp_path, path):
    """Attack: read the metrics (SPs, outcomes, outbox depth) from outside.

    Through nginx every client's address is one the node trusts less than
    the monitoring host's, but a client inside ``idp.metrics_allow`` (an
    office network listed for the monitoring host's sake) would be served:
    the site refuses the path however it is spelt.
    """
    with stack(tmp_path) as s:
        answer = s.ask("GET", path)
        assert s.seen == []
    assert_nginx_page(answer, 404, "not_found")


def test_ops_05_a_body_over_the_apps_cap_stops_at_nginx(tmp_path):
    """OPS-05: 1 MiB passes to a node, one byte more gets nginx's 413 page."""
    with stack(tmp_path) as s:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        ok = s.ask("POST", "/login", headers=headers, body=b"a" * MAX_BODY)
        assert ok.status == 200
        assert [seen.body_length for seen in s.seen] == [MAX_BODY]
        refused = s.ask("POST", "/login", headers=headers, body=b"a" * (MAX_BODY + 1))
        assert len(s.seen) == 1
    assert_nginx_page(refused, 413, "too_large")


def test_no_node_answering_gives_the_bilingual_page_with_retry_after(tmp_path):
    with stack(tmp_path, live_nodes=0) as s:
        answer = s.ask("GET", "/login")
        log = s.nginx.access_log()
    assert_nginx_page(answer, 502, "unavailable")
    assert answer.all("Retry-After") == ["5"]
    reference = re.search(r"<code>([0-9a-f]{32})</code>", answer.text).group(1)
    assert reference in log


def test_a_post_a_node_dropped_is_never_sent_to_the_other_node(tmp_path):
    """Attack (or accident): a node dies after taking a POST, mid-work.

    Resending it to the other node could apply it twice (a registration, a
    password change, a consumed token); a GET may be tried on the other
    node. Both nodes here drop every request after reading it.
    """
    with stack(tmp_path) as s:
        post = s.ask("POST", "/drop/register", body=b"a=1")
        posts = [seen.node for seen in s.seen]
        s.seen.clear()
        get = s.ask("GET", "/drop/login")
        gets = [seen.node for seen in s.seen]
    assert len(posts) == 1
    assert post.status == 502
    assert sorted(gets) == [0, 1]
    assert get.status == 502


def test_a_node_that_is_down_costs_no_request(tmp_path):
    """A stopped node refuses connections: nothing was sent, so even a POST
    goes to the other node (graceful removal loses nothing)."""
    with stack(tmp_path, live_nodes=1) as s:
        answers = [s.ask("POST", "/login", body=b"a=1") for _ in range(4)]
        answers += [s.ask("GET", "/login") for _ in range(4)]
    assert [a.status for a in answers] == [200] * 8
    assert [seen.node for seen in s.seen] == [0] * 8


def test_web_13_the_access_log_holds_no_token_or_saml_message(tmp_path):
    """WEB-13/DATA-08: tokens in paths and whole query strings stay out of the log."""
    secrets = {
        "/password/reset/RESETTOKEN123": "/password/reset/{token}",
        "/account/email/confirm/CONFIRMTOKEN123": "/account/email/confirm/{token}",
        "/saml/mdq/sp/MDQTOKEN123/entities/x": "/saml/mdq/sp/{token}/...",
        "/saml/sso/redirect?SAMLRequest=SAMLSECRET123&RelayState=R": "/saml/sso/redirect",
        "/password/reset/new?x=QUERYSECRET123": "/password/reset/new",
    }
    with stack(tmp_path) as s:
        for path in secrets:
            assert s.ask("GET", path).status == 200
        log = s.nginx.access_log(lines=len(secrets))
    for logged in secrets.values():
        assert f'"GET {logged} HTTP/1.1"' in log
    # Each secret's name, not its digits: a request id in the line is random
    # hex and may hold "123" by chance.
    for secret in (
        "RESETTOKEN",
        "CONFIRMTOKEN",
        "MDQTOKEN",
        "SAMLSECRET",
        "QUERYSECRET",
    ):
        assert secret not in log


def test_plain_http_is_only_a_redirect_to_https(tmp_path):
    with stack(tmp_path) as s:
        connection = http.client.HTTPConnection(HOST, s.nginx.ports.http, timeout=10)
        connection.request("POST", "/login?lang=en", body=b"password=x")
        response = connection.getresponse()
        connection.close()
        assert s.seen == []
    assert response.status == 301
    assert response.headers["Location"] == f"https://{HOST}/login?lang=en"


def test_tls_1_2_and_1_3_are_served(tmp_path):
    """What the site's protocols and suites leave a client with today's defaults."""
    with stack(tmp_path) as s:
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            s.tls.minimum_version = s.tls.maximum_version = version
            assert s.ask("GET", "/login").status == 200


def test_ops_09_a_request_nginx_cannot_take_gets_the_bilingual_400_page(tmp_path):
    """OPS-09: headers past nginx's buffers end at nginx, with the app's headers."""
    with stack(tmp_path) as s:
        answer = s.ask("GET", "/login", headers={"X-Big": "a" * 20000})
        assert s.seen == []
    assert_nginx_page(answer, 400, "bad_request")
