"""idp.redirects: the one rule for partners' endpoint URLs and CSP origins (SAML-36)."""

from __future__ import annotations

import pytest

from idp.redirects import UnsafeUrl, endpoint_url, origin

# Each is read one way by urlsplit and another by a browser's WHATWG parser,
# or could end a CSP source list: all refused, the reason named.
REFUSED = {
    "http://evil.example\\@127.0.0.1/acs": "backslash",
    "https://sp.example.org\\evil/acs": "backslash",
    "https://user:pw@sp.example.org/acs": "userinfo",
    "https://sp.example.org@evil.example/acs": "userinfo",
    "https://sp.example.org;script-src:*/acs": "not a valid DNS name",
    "https://sp.example.org/acs;script-src": "';'",
    "https://sp.example.org/acs,https://evil": "','",
    "https://sp.example.org/a'b": '"\'"',
    'https://sp.example.org/a"b': "'\"'",
    "https://sp.example.org/a<b": "'<'",
    "https://sp.example.org/a cs": "whitespace",
    " https://sp.example.org/acs": "whitespace",
    "https://sp.example.org/acs\u00a0": "whitespace",
    "https://sp.example.org/acs\r\nX: y": "whitespace",
    "https://sp.example.org/a\x00": "control",
    "https://sp.example.org/a\x7f": "control",
    "https://sp.example.org/a\u0085": "control",
    "https://sp.example.org/\u00e9": "percent-encoded",
    "https://sp.example.org/acs#x": "fragment",
    "https://sp.example.org/%zz": "two hex digits",
    "https://127.1/acs": "IPv4",
    "https://0x7f.0.0.1/acs": "IPv4",
    "https://2130706433/acs": "IPv4",
    "https://127.000.0.1/acs": "IPv4",
    "https://a.example.256/": "IPv4",
    "https://sp%2eexample.org/": "percent-encoded host",
    "https://b\u00fccher.example/": "punycode",
    "https://-sp.example.org/": "DNS name",
    "https://sp..example.org/": "DNS name",
    "https://sp.example.org./": "DNS name",
    "https://sp.example.org:0/": "port",
    "https://sp.example.org:65536/": "port",
    "https://sp.example.org:+443/": "port",
    "https://sp.example.org:/": "port",
    "https://[::1/": "IPv6",
    "https://[::1%25eth0]/": "zone",
    "https://[fe80::zz]/": "IPv6",
    "https:///acs": "no host",
    "https:/sp.example.org/acs": "absolute",
    "//sp.example.org/acs": "absolute",
    "javascript:alert(1)": "absolute",
    "ftp://sp.example.org/acs": "scheme",
    "https://sp.example.org/" + "a" * 2000: "longer",
    "": "empty",
}

# Controls, with the normalised origin each gives.
ACCEPTED = {
    "https://sp.example.org/acs": "https://sp.example.org",
    "https://SP.Example.ORG:443/acs": "https://sp.example.org",
    "HTTPS://sp.example.org": "https://sp.example.org",
    "https://sp.example.org:8443/a/b?x=1&y=a@b&z=%3B+(c)*!$~": (
        "https://sp.example.org:8443"
    ),
    "https://xn--bcher-kva.example/acs": "https://xn--bcher-kva.example",
    "https://192.0.2.7/acs": "https://192.0.2.7",
    "https://[2001:DB8:0::1]:8443/acs": "https://[2001:db8::1]:8443",
    "https://sp-1.example.org/": "https://sp-1.example.org",
}


@pytest.mark.parametrize("url", list(REFUSED))
def test_saml_36_each_differential_url_is_refused_with_its_reason(url):
    """SAML-36: refused by the endpoint rule and by origin(), reason named."""
    with pytest.raises(UnsafeUrl, match=REFUSED[url].replace("+", r"\+")):
        endpoint_url(url, allow_http=True)
    with pytest.raises(UnsafeUrl):
        origin(url)


@pytest.mark.parametrize("url", list(ACCEPTED))
def test_saml_36_a_plain_https_url_gives_its_normalised_origin(url):
    """SAML-36: the control; the origin is rebuilt from the parsed parts."""
    assert endpoint_url(url, allow_http=False).url == url
    assert origin(url) == ACCEPTED[url]


def test_saml_36_http_only_in_development_and_to_this_machine():
    """SAML-36: plain http needs development mode and a loopback host."""
    for local in (
        "http://localhost:8000/acs",
        "http://127.0.0.1/acs",
        "http://127.0.0.2/acs",
        "http://[::1]:8000/acs",
    ):
        with pytest.raises(UnsafeUrl, match="only in development"):
            endpoint_url(local, allow_http=False)
        assert endpoint_url(local, allow_http=True).url == local
    for remote in ("http://sp.example.org/acs", "http://localhost.evil.example/"):
        with pytest.raises(UnsafeUrl, match="another machine"):
            endpoint_url(remote, allow_http=True)
    assert origin("http://localhost:80/acs") == "http://localhost"
