"""URLs the IdP sends browsers to: its own pages, and partners' endpoints.

* :func:`safe_next`: where a user may be sent after signing in (this site's
  own pages only).
* :func:`endpoint_url`: an SP's ACS or SLO URL from its metadata, accepted
  only in a form every browser reads exactly as we do (SAML-36).
* :func:`origin`: the normalised ``scheme://host[:port]`` of such a URL, the
  only thing that ever goes into a Content-Security-Policy source.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

MAX_LENGTH = 2000
# Characters a Location header may carry as they are: RFC 3986's reserved
# and unreserved sets, and "%" so an escape already in the path stays one.
_URI_CHARACTERS = "/?#[]@!$&'()*+,;=:-._~%"


def safe_next(value: str | None) -> str | None:
    """Return ``value``, percent-encoded, if it is a path on this site, else None.

    Only absolute paths are accepted: no scheme, no host, no ``//`` or
    ``/\\`` prefix (browsers read both as another host), no backslash or
    control character anywhere. The value is checked after WebOb has
    percent-decoded it, so encoded forms of these are caught too.

    What comes back is ASCII (OPS-09): anything else in the path (``/。/x``)
    is percent-encoded as UTF-8, because it ends up in a Location header,
    which HTTP carries as Latin-1; a character outside that made the
    redirect after a successful sign-in fail, session cookie and all.
    Encoding twice changes nothing, so a value may pass through here again.
    """
    if not value or len(value) > MAX_LENGTH:
        return None
    if not value.startswith("/") or value.startswith(("//", "/\\")):
        return None
    if "\\" in value or any(
        ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF for ch in value
    ):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    encoded = quote(value, safe=_URI_CHARACTERS, encoding="utf-8")
    return encoded if len(encoded) <= MAX_LENGTH else None


# --------------------------------------------------------------------------
# Partners' endpoints (SAML-36)
#
# Python's urlsplit and a browser's WHATWG URL parser disagree on inputs
# such as ``http://evil.example\@127.0.0.1/acs`` (urlsplit: host 127.0.0.1;
# a browser: host evil.example, since a backslash ends the authority) or
# ``https://127.1/`` (a DNS name to urlsplit, 127.0.0.1 to a browser).
# Rather than emulate every WHATWG repair, an endpoint must already be in the
# form on which both agree: the characters allowed below, no userinfo, a
# canonical host and port. Anything else is refused, never "fixed".

MAX_ENDPOINT_LENGTH = 2000
DEFAULT_PORTS = {"https": 443, "http": 80}
# Hosts a development machine may reach over plain http.
LOOPBACK_NAMES = {"localhost"}

# RFC 3986 unreserved, percent and the delimiters a path or query needs;
# not whitespace, controls, backslash, quotes, ``;`` or ``,`` (which would
# end or extend a CSP source list), ``<>`` ``{}`` ``|`` ``^`` or backtick.
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~%!$&()*+=:@/?]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME_AND_AUTHORITY = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)"
)
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# WHATWG parses a host whose last label is a number (decimal, 0x hex or
# octal) as an IPv4 address, whatever the other labels are.
_NUMERIC_LABEL = re.compile(r"(?:0[xX][0-9A-Fa-f]*|[0-9]+)")


class UnsafeUrl(ValueError):
    """The URL is not one browsers and the IdP read alike; says why."""


@dataclass(frozen=True)
class EndpointUrl:
    """A checked endpoint: the URL as published, and its normalised origin."""

    url: str
    scheme: str
    host: str  # lowercase DNS name, dotted IPv4, or [IPv6] in canonical form
    port: int | None  # None for the scheme's default port
    origin: str


def parse_endpoint(value: str) -> EndpointUrl:
    """Check an absolute http(s) URL against the rule above; :class:`UnsafeUrl`.

    The scheme is not judged here (see :func:`endpoint_url`), only whether
    the URL reads the same to every parser.
    """
    if not isinstance(value, str) or not value:
        raise UnsafeUrl("is empty")
    if len(value) > MAX_ENDPOINT_LENGTH:
        raise UnsafeUrl(f"is longer than {MAX_ENDPOINT_LENGTH} characters")
    for ch in value:
        if ch.isspace() or ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F:
            raise UnsafeUrl("contains whitespace or a control character")
    if "\\" in value:
        raise UnsafeUrl("contains a backslash")
    if "#" in value:
        raise UnsafeUrl("has a fragment (#)")
    match = _SCHEME_AND_AUTHORITY.match(value)
    if match is None:
        raise UnsafeUrl("is not an absolute URL (scheme://host/...)")
    scheme = match["scheme"].lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeUrl(f"has the scheme {match['scheme']!r}, not https")
    # The authority is checked by its own grammar below (an IPv6 host needs
    # brackets); the path and query by the character rule.
    rest = value[match.end() :]
    if not _URL_CHARACTERS.fullmatch(rest):
        bad = next(ch for ch in rest if not _URL_CHARACTERS.fullmatch(ch))
        raise UnsafeUrl(f"contains {bad!r}, which must be percent-encoded")
    if _BAD_PERCENT.search(rest):
        raise UnsafeUrl("has a % not followed by two hex digits")
    authority = match["authority"]
    if "@" in authority:
        raise UnsafeUrl("has a user name or password (userinfo) before the host")
    host, port = _host_and_port(authority)
    if port == DEFAULT_PORTS[scheme]:
        port = None
    netloc = host if port is None else f"{host}:{port}"
    return EndpointUrl(value, scheme, host, port, f"{scheme}://{netloc}")


def _host_and_port(authority: str) -> tuple[str, int | None]:
    if authority.startswith("["):
        literal, bracket, rest = authority[1:].partition("]")
        if not bracket or "%" in literal:
            raise UnsafeUrl("has an unclosed [IPv6] host or a zone (%)")
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            raise UnsafeUrl(f"has an invalid IPv6 host [{literal}]") from None
        host = f"[{address.compressed}]"
    else:
        host, _, rest = authority.partition(":")
        rest = f":{rest}" if _ else ""
        host = _checked_host(host)
    if not rest:
        return host, None
    digits = rest[1:]
    if not rest.startswith(":") or not digits.isdigit() or not digits.isascii():
        raise UnsafeUrl("has an invalid port")
    port = int(digits)
    if not 1 <= port <= 65535 or len(digits) > 5:
        raise UnsafeUrl(f"has the port {digits}, outside 1-65535")
    return host, port


def _checked_host(host: str) -> str:
    if not host:
        raise UnsafeUrl("has no host")
    if "%" in host:
        raise UnsafeUrl("has a percent-encoded host")
    lowered = host.lower()
    labels = lowered.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # A browser reads this as IPv4 (127.1, 0x7f.0.0.1, 2130706433): only
        # the canonical dotted form is accepted, so both sides agree.
        try:
            address = ipaddress.IPv4Address(lowered)
        except ValueError:
            raise UnsafeUrl(
                f"has the host {host!r}, which browsers read as an IPv4 address; "
                "write it as four decimal numbers"
            ) from None
        return str(address)
    if len(lowered) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise UnsafeUrl(
            f"has the host {host!r}, which is not a valid DNS name "
            "(internationalised names must be written in punycode, xn--)"
        )
    return lowered


def is_loopback(host: str) -> bool:
    """Whether a host from :func:`parse_endpoint` names this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def endpoint_url(value: str, *, allow_http: bool) -> EndpointUrl:
    """An SP endpoint (ACS, SLO, logo) we may send a browser to (SAML-36).

    https always; plain http only when ``allow_http`` (the IdP runs in
    development) and only to this machine. Raises :class:`UnsafeUrl`.
    """
    parsed = parse_endpoint(value)
    if parsed.scheme == "https":
        return parsed
    if allow_http and is_loopback(parsed.host):
        return parsed
    if allow_http:
        raise UnsafeUrl("is plain http to another machine; use https")
    raise UnsafeUrl("is not https (plain http is accepted only in development)")


def origin(url: str) -> str:
    """The normalised ``scheme://host[:port]`` of an endpoint (a CSP source).

    Built from the parsed parts, never copied from the URL, so nothing in
    it can end the source list or add a directive. Raises
    :class:`UnsafeUrl` for a URL :func:`parse_endpoint` refuses.
    """
    return parse_endpoint(url).origin
