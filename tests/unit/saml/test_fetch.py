"""OPS-04: fetching metadata from URLs operators type, without SSRF.

A local HTTPS server on 127.0.0.1 with a throwaway CA plays the partner
(allowlisted for these tests, as an operator would allowlist an internal
partner). Each attack is tried as an outsider would, holding the source: a
URL naming this machine or the cloud's metadata service in every spelling,
a name that resolves there, a redirect that points there. Refusals must
happen before any connection: ``attempts`` records every TCP connection
the fetcher opens, and the server counts what it accepts.
"""

from __future__ import annotations

import gzip
import ipaddress
import socket
import time

import pytest
import urllib3.util.connection

from idp.saml.fetch import (
    FetchError,
    FetchPolicy,
    address_refusal,
    fetch,
)
from idp.settings import SettingsError, parse_settings
from tests.app import base_settings
from tests.partner_server import Answer, PartnerServer, closed_port

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))
DOCUMENT = b'<?xml version="1.0"?><md:EntityDescriptor entityID="https://sp.test"/>'


@pytest.fixture
def server(partner_server):
    partner_server.reset()
    return partner_server


def names(table):
    def resolve(host, port):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(table[host])

    return resolve


@pytest.fixture
def policy(ca):
    """The partner allowlisted on loopback, reached by the name partner.test."""
    return FetchPolicy(
        connect_timeout=2,
        timeout=5,
        max_bytes=1024 * 1024,
        allow=LOOPBACK,
        ca_bundle=str(ca.ca_file),
        resolve=names({"partner.test": ["127.0.0.1"], "evil.test": ["127.0.0.1"]}),
    )


@pytest.fixture
def strict(ca):
    """No allowlist: only public addresses, as production ships."""
    return FetchPolicy(connect_timeout=2, timeout=5, ca_bundle=str(ca.ca_file))


@pytest.fixture
def attempts(monkeypatch):
    """Every TCP connection the fetcher opens (urllib3's one way out)."""
    made = []
    real = urllib3.util.connection.create_connection

    def spy(address, *args, **kwargs):
        made.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", spy)
    return made


def refused(url, policy, match):
    with pytest.raises(FetchError, match=match) as info:
        fetch(url, policy=policy)
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------
# What works


def test_ops_04_fetches_over_https_by_name_with_sni_and_certificate_check(
    server, policy, attempts
):
    server.routes["/md.xml"] = Answer(
        body=DOCUMENT, headers={"Content-Type": "application/samlmetadata+xml"}
    )
    url = server.url("/md.xml", host="partner.test")
    got = fetch(url, policy=policy)
    assert (got.status, got.body, got.url) == (200, DOCUMENT, url)
    assert attempts == [("127.0.0.1", server.port)]
    seen = server.requests[0].headers
    assert seen["Host"] == f"partner.test:{server.port}"
    assert seen["Accept"] == "application/samlmetadata+xml"
    assert seen["Accept-Encoding"] == "gzip"
    assert "If-None-Match" not in seen


def test_ops_04_the_certificate_must_name_the_host(server, policy):
    """evil.test resolves to the partner, whose certificate does not name it."""
    server.routes["/md.xml"] = Answer(body=DOCUMENT)
    refused(
        server.url("/md.xml", host="evil.test"),
        policy,
        r"TLS certificate of evil\.test not accepted: .*mismatch",
    )
    assert server.requests == []


def test_ops_04_an_untrusted_ca_is_refused(server, policy):
    server.routes["/md.xml"] = Answer(body=DOCUMENT)
    system_cas = FetchPolicy(
        allow=policy.allow, resolve=policy.resolve, connect_timeout=2, timeout=5
    )
    refused(
        server.url("/md.xml", host="partner.test"),
        system_cas,
        r"TLS certificate of partner\.test not accepted: unable to get local issuer",
    )
    assert server.requests == []


def test_etag_and_last_modified_round_trip_to_304(server, policy):
    stamp = "Wed, 02 Dec 2026 10:00:00 GMT"

    def answer(seen):
        if seen.headers.get("If-None-Match") == '"v1"':
            return Answer(304)
        return Answer(body=DOCUMENT, headers={"ETag": '"v1"', "Last-Modified": stamp})

    server.routes["/md.xml"] = answer
    url = server.url("/md.xml", host="partner.test")
    first = fetch(url, policy=policy)
    assert (first.status, first.etag, first.last_modified) == (200, '"v1"', stamp)

    again = fetch(
        url, policy=policy, etag=first.etag, last_modified=first.last_modified
    )
    assert (again.status, again.body) == (304, None)
    assert (again.etag, again.last_modified) == ('"v1"', stamp)
    sent = server.requests[-1].headers
    assert (sent["If-None-Match"], sent["If-Modified-Since"]) == ('"v1"', stamp)


def test_a_304_nobody_asked_for_is_an_error(server, policy):
    server.routes["/md.xml"] = Answer(304)
    refused(server.url("/md.xml", host="partner.test"), policy, r"HTTP 304")


@pytest.mark.parametrize(
    ("etag", "last_modified"),
    [
        ('"' + "x" * 300 + '"', "\x01"),
        ("\x7f", "Wed, 02 Dec 2026 10:00:00 GMT" + "x" * 40),
    ],
)
def test_validators_that_are_not_short_printable_ascii_are_dropped(
    server, policy, etag, last_modified
):
    """They are stored and sent back: a partner cannot make them anything else."""
    server.routes["/md.xml"] = Answer(
        body=DOCUMENT, headers={"ETag": etag, "Last-Modified": last_modified}
    )
    got = fetch(server.url("/md.xml", host="partner.test"), policy=policy)
    assert (got.etag, got.last_modified) == (None, None)


@pytest.mark.parametrize(
    ("status", "text"),
    [(404, "HTTP 404 Not Found"), (503, "HTTP 503 Service Unavailable")],
)
def test_an_http_error_is_one_line_with_its_status(server, policy, status, text):
    server.routes["/md.xml"] = Answer(status, b"<html>oops</html>")
    with pytest.raises(FetchError, match=text) as info:
        fetch(server.url("/md.xml", host="partner.test"), policy=policy)
    assert info.value.status == status


def test_partner_down_is_one_line(policy):
    port = closed_port()
    refused(
        f"https://partner.test:{port}/md.xml",
        policy,
        r"cannot connect to partner\.test \(127\.0\.0\.1: Connection refused\)",
    )


def test_an_unknown_name_is_one_line(policy):
    refused("https://nowhere.test/md.xml", policy, r"cannot resolve nowhere\.test")


# --------------------------------------------------------------------------
# Redirects


def test_redirects_are_followed_to_a_vetted_place(server, policy):
    server.routes["/a"] = Answer(302, headers={"Location": "/b"})
    server.routes["/b"] = Answer(
        301, headers={"Location": server.url("/c", "partner.test")}
    )
    server.routes["/c"] = Answer(body=DOCUMENT)
    got = fetch(server.url("/a", host="partner.test"), policy=policy)
    assert (got.body, got.url) == (DOCUMENT, server.url("/c", host="partner.test"))


def test_at_most_three_redirects(server, policy):
    for hop in range(4):
        server.routes[f"/{hop}"] = Answer(307, headers={"Location": f"/{hop + 1}"})
    server.routes["/4"] = Answer(body=DOCUMENT)
    refused(server.url("/0", host="partner.test"), policy, "more than 3 redirects")
    assert [seen.path for seen in server.requests] == ["/0", "/1", "/2", "/3"]


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
        ("https://10.1.2.3/", "10.1.2.3 is private"),
        ("https://[::ffff:169.254.169.254]/", "link-local, as 169.254.169.254 inside"),
        ("http://partner.test/md.xml", "not https"),
        ("file:///etc/passwd", "the scheme 'file', not https"),
        ("https://0x7f000001/", "browsers read as an IPv4 address"),
    ],
)
def test_ops_04_a_redirect_to_an_internal_place_is_refused(
    server, policy, attempts, location, reason
):
    server.routes["/go"] = Answer(302, headers={"Location": location})
    refused(server.url("/go", host="partner.test"), policy, reason)
    assert attempts == [("127.0.0.1", server.port)]


# --------------------------------------------------------------------------
# Time and size


def test_ops_04_a_server_that_stalls_is_cut_off(server, policy):
    server.routes["/md.xml"] = Answer(stall=True)
    quick = FetchPolicy(**{**policy.__dict__, "timeout": 0.5})
    started = time.monotonic()
    refused(server.url("/md.xml", host="partner.test"), quick, r"within 0\.5 s")
    assert time.monotonic() - started < 2


def test_ops_04_a_server_that_drips_is_cut_off_at_the_whole_deadline(server, policy):
    """Each byte arrives well within a read timeout; the whole fetch still ends."""
    server.routes["/md.xml"] = Answer(body=DOCUMENT, drip=0.05)
    quick = FetchPolicy(**{**policy.__dict__, "timeout": 0.6})
    started = time.monotonic()
    refused(server.url("/md.xml", host="partner.test"), quick, r"within 0\.6 s")
    assert time.monotonic() - started < 2


def test_ops_04_a_server_that_drips_its_headers_is_cut_off_at_the_deadline(
    server, policy
):
    """Every byte comes within a socket timeout; only the deadline's cut ends it."""
    server.routes["/md.xml"] = Answer(drip_headers=0.05)
    quick = FetchPolicy(**{**policy.__dict__, "timeout": 0.6})
    started = time.monotonic()
    refused(server.url("/md.xml", host="partner.test"), quick, r"within 0\.6 s")
    assert time.monotonic() - started < 2


def test_ops_04_a_body_cut_at_the_deadline_is_not_taken_for_a_whole_one(server, policy):
    """Without Content-Length, the deadline's cut looks like the body's end."""
    server.routes["/md.xml"] = Answer(body=DOCUMENT * 100, drip=0.01, length=False)
    quick = FetchPolicy(**{**policy.__dict__, "timeout": 0.5})
    refused(server.url("/md.xml", host="partner.test"), quick, r"within 0\.5 s")


def test_ops_04_a_declared_size_over_the_cap_is_refused_unread(server, policy):
    server.routes["/md.xml"] = Answer(
        body=b"x", headers={"Content-Length": str(policy.max_bytes + 1)}
    )
    refused(
        server.url("/md.xml", host="partner.test"),
        policy,
        r"larger than 1 MiB \(idp\.metadata_fetch_max_bytes\)",
    )


def test_ops_04_an_undeclared_size_is_capped_while_streaming(server, policy):
    server.routes["/md.xml"] = Answer(body=b"x" * (policy.max_bytes + 10), length=False)
    refused(server.url("/md.xml", host="partner.test"), policy, r"larger than 1 MiB")


def test_gzip_is_accepted_and_decoded(server, policy):
    server.routes["/md.xml"] = Answer(
        body=gzip.compress(DOCUMENT), headers={"Content-Encoding": "gzip"}
    )
    assert (
        fetch(server.url("/md.xml", host="partner.test"), policy=policy).body
        == DOCUMENT
    )


def test_ops_04_a_gzip_bomb_is_capped_after_decompression(server, policy):
    bomb = gzip.compress(b"\0" * (32 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < policy.max_bytes // 10
    server.routes["/md.xml"] = Answer(body=bomb, headers={"Content-Encoding": "gzip"})
    refused(
        server.url("/md.xml", host="partner.test"),
        policy,
        r"the decompressed document is larger than 1 MiB",
    )


@pytest.mark.parametrize(
    ("body", "encoding", "reason"),
    [
        (b"<xml>not gzip</xml>", "gzip", "gzip body is corrupt"),
        # mtime=0: the same bytes in every pytest-xdist worker's collection.
        (gzip.compress(DOCUMENT, mtime=0)[:-12], "gzip", "gzip body ends early"),
        (DOCUMENT, "br", "unsupported Content-Encoding 'br'"),
    ],
    ids=["corrupt", "truncated", "unsupported"],
)
def test_a_bad_encoding_is_one_line(server, policy, body, encoding, reason):
    server.routes["/md.xml"] = Answer(body=body, headers={"Content-Encoding": encoding})
    refused(server.url("/md.xml", host="partner.test"), policy, reason)


# --------------------------------------------------------------------------
# The attacks: refused before any connection


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "127.0.0.1 is loopback"),
        ("127.1", "browsers read as an IPv4 address"),
        ("0x7f000001", "browsers read as an IPv4 address"),
        ("2130706433", "browsers read as an IPv4 address"),
        ("0177.0.0.1", "browsers read as an IPv4 address"),
        ("[::1]", "::1 is loopback"),
        ("[::ffff:127.0.0.1]", "loopback, as 127.0.0.1 inside it"),
        ("[::ffff:7f00:1]", "loopback, as 127.0.0.1 inside it"),
        ("[64:ff9b::7f00:1]", "loopback, as 127.0.0.1 inside it"),
        ("[2002:7f00:1::]", "loopback, as 127.0.0.1 inside it"),
        ("[::127.0.0.1]", "::7f00:1 is reserved"),
        ("0.0.0.0", "0.0.0.0 is unspecified"),  # noqa: S104 (an attack, not a bind)
        ("[::]", ":: is unspecified"),
        ("169.254.169.254", "169.254.169.254 is link-local"),
        ("[fe80::1]", "fe80::1 is link-local"),
        ("10.0.0.1", "10.0.0.1 is private"),
        ("172.16.5.4", "172.16.5.4 is private"),
        ("192.168.1.1", "192.168.1.1 is private"),
        ("[fd00::1]", "fd00::1 is private"),
        ("100.64.0.1", "100.64.0.1 is not globally routable"),
        ("192.0.2.1", "192.0.2.1 is private"),
        ("224.0.0.1", "224.0.0.1 is multicast"),
        ("[ff02::1]", "ff02::1 is multicast"),
        ("240.0.0.1", "240.0.0.1 is"),
        ("255.255.255.255", "255.255.255.255 is"),
    ],
)
def test_ops_04_internal_addresses_are_refused_with_no_connection(
    server, strict, attempts, host, reason
):
    refused(f"https://{host}:{server.port}/md.xml", strict, reason)
    assert attempts == []
    assert server.connections == 0


def test_ops_04_a_name_resolving_to_this_machine_is_refused(server, strict, attempts):
    """``localhost`` through the system's own resolver (no /etc/hosts edits)."""
    refused(
        f"https://localhost:{server.port}/md.xml",
        strict,
        r"refused, localhost resolves to (127\.0\.0\.1|::1) is loopback",
    )
    assert attempts == []
    assert server.connections == 0


def test_ops_04_one_internal_address_among_public_ones_refuses_the_name(
    server, strict, attempts
):
    """An attacker's DNS answers a public address and 169.254.169.254 together."""
    mixed = FetchPolicy(
        **{
            **strict.__dict__,
            "resolve": names({"partner.test": ["203.0.113.7", "169.254.169.254"]}),
        }
    )
    refused(
        "https://partner.test/md.xml",
        mixed,
        r"partner\.test resolves to 203\.0\.113\.7 is private",
    )
    public_then_internal = FetchPolicy(
        **{
            **strict.__dict__,
            "resolve": names({"partner.test": ["8.8.8.8", "169.254.169.254"]}),
        }
    )
    refused(
        "https://partner.test/md.xml",
        public_then_internal,
        r"partner\.test resolves to 169\.254\.169\.254 is link-local",
    )
    assert attempts == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "the scheme 'file', not https"),
        ("ftp://partner.test/md.xml", "the scheme 'ftp', not https"),
        ("gopher://127.0.0.1:6379/_INFO", "the scheme 'gopher', not https"),
        ("http://partner.test/md.xml", "not https"),
        ("http://127.0.0.1/md.xml", "not https"),
        ("https://user:pw@partner.test/md.xml", "userinfo"),
        ("https://partner.test\\@127.0.0.1/", "backslash"),
        ("https://partner.test/md.xml#x", "fragment"),
        ("//partner.test/md.xml", "not an absolute URL"),
    ],
)
def test_ops_04_other_schemes_and_tricky_urls_are_refused(
    policy, attempts, url, reason
):
    refused(url, policy, reason)
    assert attempts == []


def test_ops_04_dns_rebinding_changes_nothing(server, policy, monkeypatch):
    """The name is resolved once, and the vetted address is what is connected to.

    The resolver answers the partner's address first and an internal one
    afterwards (a rebinding attacker's DNS); any other lookup in the process
    fails, so a second resolution by the HTTP library would show.
    """
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])
    calls = []

    def rebinding(host, port):
        calls.append(host)
        return next(answers)

    def no_dns(host, *args, **kwargs):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise AssertionError(f"a second DNS lookup of {host}") from None
        return real(host, *args, **kwargs)

    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    server.routes["/md.xml"] = Answer(body=DOCUMENT)
    pinned = FetchPolicy(**{**policy.__dict__, "resolve": rebinding})
    assert (
        fetch(server.url("/md.xml", host="partner.test"), policy=pinned).body
        == DOCUMENT
    )
    assert calls == ["partner.test"]


def test_ops_04_a_slow_resolver_is_cut_off(policy):
    import threading

    release = threading.Event()

    def hangs(host, port):
        release.wait(10)
        return ["127.0.0.1"]

    slow = FetchPolicy(**{**policy.__dict__, "resolve": hangs, "connect_timeout": 0.2})
    try:
        refused("https://partner.test/md.xml", slow, r"looking up partner\.test took")
    finally:
        release.set()


def test_plain_http_only_to_loopback_in_development(ca):
    with PartnerServer(None) as plain:
        plain.routes["/md.xml"] = Answer(body=DOCUMENT)
        development = FetchPolicy(allow=LOOPBACK, allow_http=True, timeout=5)
        got = fetch(plain.url("/md.xml"), policy=development)
        assert got.body == DOCUMENT
        refused(
            plain.url("/md.xml", host="localhost"),
            development,
            r"plain http is allowed only to 127\.0\.0\.1 or \[::1\]",
        )
        closed = FetchPolicy(allow=LOOPBACK, timeout=5)
        refused(plain.url("/md.xml"), closed, "not https")
        assert plain.connections == 1


# --------------------------------------------------------------------------
# The address rule and the settings


def test_an_allowlisted_network_is_reachable_in_every_form():
    allow = (ipaddress.ip_network("10.20.0.0/16"),)
    assert address_refusal(ipaddress.ip_address("10.20.1.2"), allow) is None
    assert address_refusal(ipaddress.ip_address("::ffff:10.20.1.2"), allow) is None
    assert address_refusal(ipaddress.ip_address("10.21.1.2"), allow) == "private"
    assert address_refusal(ipaddress.ip_address("8.8.8.8")) is None
    assert address_refusal(ipaddress.ip_address("2001:4860:4860::8888")) is None


def settings_with(tmp_path, **values):
    raw = base_settings(tmp_path)
    raw.update(values)
    return parse_settings(raw, environ={})


def test_the_fetch_settings_are_typed(tmp_path):
    settings = settings_with(
        tmp_path,
        **{
            "idp.metadata_fetch_allow": "10.0.0.0/8, 2001:db8::/32",
            "idp.metadata_fetch_timeout": "30",
        },
    )
    policy = FetchPolicy.from_settings(settings)
    assert policy.allow == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert (policy.timeout, policy.connect_timeout) == (30, 5)
    assert policy.max_bytes == 100 * 1024 * 1024
    assert policy.ca_bundle is None and policy.allow_http is False


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("idp.metadata_fetch_allow", "0.0.0.0/0", "would allow every address"),
        ("idp.metadata_fetch_allow", "::/0", "would allow every address"),
        ("idp.metadata_fetch_allow", "10.0.0.1/8", "not a network in CIDR form"),
        ("idp.metadata_fetch_allow", "intranet", "not a network in CIDR form"),
        ("idp.metadata_fetch_max_bytes", "10", "must be between 1 MiB and 1 GiB"),
        ("idp.metadata_fetch_ca_bundle", "/nonexistent/ca.pem", "no such file"),
        ("idp.metadata_refresh_min_seconds", "7200", "must not be more than"),
    ],
)
def test_a_wrong_fetch_setting_stops_the_start(tmp_path, name, value, message):
    extra = {"idp.metadata_refresh_max_seconds": "3600"} if "refresh" in name else {}
    with pytest.raises(SettingsError, match=f"{name}: .*{message}"):
        settings_with(tmp_path, **{name: value, **extra})


def test_plain_http_fetching_is_refused_in_production(tmp_path):
    raw = {
        "idp.environment": "production",
        "idp.session_secret": "s" * 40,
        "idp.hmac_key": "h" * 40,
        "idp.base_url": "https://idp.example",
        "idp.auto_create_keys": "false",
    }
    with pytest.raises(
        SettingsError, match=r"idp\.metadata_fetch_allow_http: must be false"
    ):
        settings_with(tmp_path, **raw, **{"idp.metadata_fetch_allow_http": "true"})
