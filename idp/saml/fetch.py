"""Fetching SAML metadata over HTTPS from URLs operators type (OPS-04).

A server that fetches URLs is a way into the network behind it: a metadata
URL (or an MDQ base URL, or a redirect a partner's server answers) naming
``127.0.0.1``, ``169.254.169.254`` (the cloud's metadata service), an
internal host or ``file:`` would make the IdP read, and report on, what an
outsider cannot reach. So :func:`fetch`:

* accepts only ``https://`` URLs in the strict form of
  :func:`idp.redirects.parse_endpoint` (no userinfo, a canonical host:
  ``127.1``, ``0x7f000001`` and ``2130706433`` are refused, not resolved);
  plain ``http://`` only in development, only to a loopback address, and
  only when ``idp.metadata_fetch_allow_http`` says so;
* resolves the host **once** and refuses the whole fetch if any address is
  loopback, private, link-local, multicast, reserved, unspecified or
  otherwise not globally routable, also behind the IPv6 forms that carry an
  IPv4 address (``::ffff:127.0.0.1``, NAT64, 6to4, Teredo), unless the
  operator allowlisted it (``idp.metadata_fetch_allow``, CIDRs);
* connects to that vetted address itself, never to the name, so a DNS
  answer that changes between the check and the connection (rebinding)
  changes nothing; TLS still sends the host name (SNI) and verifies the
  certificate against it;
* follows at most three redirects, each one vetted the same way;
* bounds the connection (``idp.metadata_fetch_connect_timeout``) and the
  whole exchange (``idp.metadata_fetch_timeout``): a server that stalls or
  drips a byte a second is cut off at the deadline, not at each read's;
* caps the body (``idp.metadata_fetch_max_bytes``) while it streams, and
  again after gzip decompression, so a small gzip bomb cannot fill memory.

urllib3 (already installed through requests and pysaml2, and kept
maintained) does the HTTP and TLS: its ``HTTPSConnection`` takes the address
to connect to and the ``server_hostname`` for SNI and certificate checks
separately, which is exactly the pinning described above. Nothing here reads
proxy variables from the environment.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urljoin, urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.response import BaseHTTPResponse

from idp.redirects import UnsafeUrl, parse_endpoint
from idp.units import format_bytes

ACCEPT_METADATA = "application/samlmetadata+xml"
USER_AGENT = "idMe-IdP metadata fetcher"
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# ETag and Last-Modified are stored and sent back: kept only when short and
# printable, so a partner cannot make us store or echo anything else.
MAX_VALIDATOR_LENGTH = 256
# An HTTP date is 29 characters; the column holding it takes 64.
MAX_LAST_MODIFIED_LENGTH = 64
_CHUNK = 64 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class FetchError(Exception):
    """The fetch failed; ``str()`` is one line naming the URL and the cause.

    ``status`` is the HTTP status when the server answered with an error
    (an MDQ responder's 404 means "no such entity"), else None.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Fetched:
    """A fetch's outcome: 200 with ``body``, or 304 (not modified) without.

    ``etag`` and ``last_modified`` are the validators to send next time
    (the ones sent, when a 304 names none); ``url`` is where the answer came
    from after redirects.
    """

    status: int
    body: bytes | None
    etag: str | None
    last_modified: str | None
    url: str


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class FetchPolicy:
    """Limits and trust for :func:`fetch`; :meth:`from_settings` reads the ini.

    ``resolve`` maps a host name and port to addresses; tests give a fixed
    table (the process's own resolver is the default). It is code-only,
    never a setting.
    """

    connect_timeout: float = 5.0
    timeout: float = 300.0
    max_bytes: int = 100 * 1024 * 1024
    allow: tuple[IPNetwork, ...] = ()
    ca_bundle: str | None = None
    allow_http: bool = False
    max_redirects: int = MAX_REDIRECTS
    resolve: Resolver = field(default=_resolve, repr=False, compare=False)

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any], **overrides: Any
    ) -> FetchPolicy:
        values: dict[str, Any] = {
            "connect_timeout": float(settings["idp.metadata_fetch_connect_timeout"]),
            "timeout": float(settings["idp.metadata_fetch_timeout"]),
            "max_bytes": settings["idp.metadata_fetch_max_bytes"],
            "allow": tuple(settings["idp.metadata_fetch_allow"]),
            "ca_bundle": settings["idp.metadata_fetch_ca_bundle"] or None,
            "allow_http": bool(
                settings["idp.metadata_fetch_allow_http"]
                and settings.get("idp.development")
            ),
        }
        values.update(overrides)
        return cls(**values)


# --------------------------------------------------------------------------
# Which addresses may be fetched from


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to (mapped, NAT64, 6to4, Teredo)."""
    found = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def _own_refusal(address: IPAddress) -> str | None:
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not globally routable"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    return None


def address_refusal(address: IPAddress, allow: Iterable[IPNetwork] = ()) -> str | None:
    """Why the fetcher must not connect to ``address``, or None if it may.

    An allowlisted address is always allowed (an IPv6 form carrying an
    allowlisted IPv4 address too); otherwise the address, and every IPv4
    address its IPv6 form embeds, must be public.
    """
    allow = tuple(allow)
    embedded = (
        _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else []
    )
    if any(
        address in network for network in allow if network.version == address.version
    ):
        return None
    if embedded and all(
        any(inner in network for network in allow if network.version == 4)
        for inner in embedded
    ):
        return None
    for inner in embedded:
        reason = _own_refusal(inner)
        if reason is not None:
            return f"{reason}, as {inner} inside it"
    return _own_refusal(address)


# --------------------------------------------------------------------------
# One vetted hop


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str  # as in the URL: a DNS name, dotted IPv4 or [IPv6]
    port: int
    path: str  # path and query, as sent
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    @property
    def server_hostname(self) -> str:
        return self.host.strip("[]")


def _resolve_within(
    policy: FetchPolicy, host: str, port: int, url: str, deadline: _Deadline
) -> list[str]:
    """Resolve in a helper thread so a dead resolver cannot outlast the timeout."""
    outcome: dict[str, Any] = {}

    def lookup() -> None:
        try:
            outcome["addresses"] = policy.resolve(host, port)
        except (OSError, UnicodeError) as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=lookup, name="metadata-resolve", daemon=True)
    thread.start()
    wait = min(policy.connect_timeout, deadline.remaining(url))
    thread.join(wait)
    if thread.is_alive():
        raise FetchError(f"{url}: looking up {host} took longer than {wait:g} s")
    if "error" in outcome:
        reason = getattr(outcome["error"], "strerror", None) or outcome["error"]
        raise FetchError(f"{url}: cannot resolve {host}: {reason}")
    if not outcome.get("addresses"):
        raise FetchError(f"{url}: {host} has no address")
    return list(outcome["addresses"])


def _vet(url: str, policy: FetchPolicy, deadline: _Deadline) -> _Target:
    try:
        parsed = parse_endpoint(url)
    except UnsafeUrl as exc:
        raise FetchError(f"{_shown(url)}: refused, the URL {exc}") from None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = parsed.host
    literal = host.strip("[]")
    if parsed.scheme == "http":
        if not policy.allow_http:
            raise FetchError(
                f"{url}: refused, not https (plain http only in development, "
                "with idp.metadata_fetch_allow_http)"
            )
        if not _is_loopback_literal(literal):
            raise FetchError(
                f"{url}: refused, plain http is allowed only to 127.0.0.1 or [::1]; "
                "use https"
            )
    try:
        addresses = [str(ipaddress.ip_address(literal))]
    except ValueError:
        addresses = _resolve_within(policy, host, port, url, deadline)
    vetted = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise FetchError(
                f"{url}: {host} resolved to {text!r}, not an address"
            ) from None
        reason = address_refusal(address, policy.allow)
        if reason is not None:
            named = "" if text == literal else f"{host} resolves to "
            raise FetchError(
                f"{url}: refused, {named}{address} is {reason} "
                "(allow it with idp.metadata_fetch_allow)"
            )
        vetted.append(str(address))
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(url, parsed.scheme, host, port, path, tuple(vetted))


def _is_loopback_literal(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _shown(url: str) -> str:
    """``url`` cut to a readable length for an error line."""
    text = url if isinstance(url, str) else repr(url)
    printable = "".join(ch if ch.isprintable() else "?" for ch in text)
    return printable if len(printable) <= 200 else printable[:200] + "..."


@lru_cache(maxsize=8)
def _tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_bundle)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """The TLS settings of every fetch: system CAs or ``ca_bundle``, TLS >= 1.2.

    Raises :class:`FetchError` when the bundle cannot be read.
    """
    try:
        return _tls_context(ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(
            f"idp.metadata_fetch_ca_bundle: cannot read {ca_bundle!r}: {exc}"
        ) from None


class _Deadline:
    """The whole fetch's end, enforced on every socket the fetch opens.

    Socket timeouts bound each receive, not their sum: a server that sends
    a TLS handshake or headers a byte at a time, each just in time, would
    hold the fetch for hours. A timer shuts down each socket at the
    deadline, whatever the fetch is waiting for; ``fired`` then tells a
    shortened answer from a complete one.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.fired = False
        self._timers: list[threading.Timer] = []
        self._handles: list[socket.socket] = []

    def remaining(self, url: str) -> float:
        left = self.end - time.monotonic()
        if left <= 0 or self.fired:
            raise self.expired(url)
        return left

    def expired(self, url: str) -> FetchError:
        return FetchError(f"{url}: no complete answer within {self.seconds:g} s")

    def watch(self, sock: socket.socket) -> None:
        # A duplicate of the socket: TLS takes the original over (detaching
        # it), and shutting down either ends the one connection.
        handle = sock.dup()
        self._handles.append(handle)
        timer = threading.Timer(
            max(0.0, self.end - time.monotonic()), self._cut, args=(handle,)
        )
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _cut(self, handle: socket.socket) -> None:
        self.fired = True
        with contextlib.suppress(OSError):
            handle.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for handle in self._handles:
            handle.close()


class _WatchedHTTPConnection(HTTPConnection):
    """Plain http (development only), its socket under the deadline."""

    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        self._deadline.watch(sock)
        return sock


class _WatchedHTTPSConnection(HTTPSConnection):
    """https, its socket under the deadline from before the TLS handshake."""

    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        self._deadline.watch(sock)
        return sock


def _connect(
    target: _Target, policy: FetchPolicy, deadline: _Deadline
) -> HTTPConnection:
    failures = []
    for address in target.addresses:
        timeout = min(policy.connect_timeout, deadline.remaining(target.url))
        conn: HTTPConnection
        if target.scheme == "https":
            conn = _WatchedHTTPSConnection(
                address,
                target.port,
                timeout=timeout,
                server_hostname=target.server_hostname,
                ssl_context=tls_context(policy.ca_bundle),
                cert_reqs="CERT_REQUIRED",
                deadline=deadline,
            )
        else:
            conn = _WatchedHTTPConnection(
                address, target.port, timeout=timeout, deadline=deadline
            )
        try:
            try:
                conn.connect()
            except Exception:
                conn.close()
                if deadline.fired:
                    raise deadline.expired(target.url) from None
                raise
            return conn
        except ssl.SSLCertVerificationError as exc:
            conn.close()
            raise FetchError(
                f"{target.url}: TLS certificate of {target.host} not accepted: "
                f"{exc.verify_message or exc.reason}"
            ) from None
        except ssl.SSLError as exc:
            conn.close()
            raise FetchError(
                f"{target.url}: TLS failure with {target.host}: {exc.reason or exc}"
            ) from None
        except (
            NewConnectionError,
            NameResolutionError,
            ConnectTimeoutError,
            OSError,
        ) as exc:
            # urllib3's NewConnectionError is a ConnectTimeoutError too: what
            # happened is in the cause.
            conn.close()
            cause = exc.__cause__ or exc
            if isinstance(cause, TimeoutError):
                failures.append(f"{address}: no answer within {timeout:g} s")
            else:
                failures.append(
                    f"{address}: {getattr(cause, 'strerror', None) or cause}"
                )
    raise FetchError(
        f"{target.url}: cannot connect to {target.host} ({'; '.join(failures)})"
    )


def _validator(value: str | None, limit: int = MAX_VALIDATOR_LENGTH) -> str | None:
    if value is None or len(value) > limit:
        return None
    if not value.isascii() or not value.isprintable():
        return None
    return value


class _Body:
    """The body, capped as it arrives and again after gzip decompression."""

    def __init__(self, url: str, limit: int, encoding: str) -> None:
        self.url = url
        self.limit = limit
        self.raw = 0
        self.data = bytearray()
        self.gzip = encoding == "gzip"
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.gzip else None

    def _too_big(self, size: int, what: str) -> FetchError:
        return FetchError(
            f"{self.url}: refused, the {what} is larger than "
            f"{format_bytes(self.limit)} (idp.metadata_fetch_max_bytes)"
        )

    def feed(self, chunk: bytes) -> None:
        self.raw += len(chunk)
        if self.raw > self.limit:
            raise self._too_big(self.raw, "document")
        if self._inflater is None:
            self.data += chunk
            return
        pending = chunk
        while pending:
            try:
                room = self.limit - len(self.data) + 1
                self.data += self._inflater.decompress(pending, room)
            except zlib.error as exc:
                raise FetchError(
                    f"{self.url}: the gzip body is corrupt ({exc})"
                ) from None
            if len(self.data) > self.limit:
                raise self._too_big(len(self.data), "decompressed document")
            pending = self._inflater.unconsumed_tail
            if self._inflater.eof and self._inflater.unused_data:
                # A gzip stream may hold several members, one after another.
                pending = self._inflater.unused_data
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def finish(self) -> bytes:
        if self._inflater is not None and not self._inflater.eof:
            raise FetchError(f"{self.url}: the gzip body ends early")
        return bytes(self.data)


def _read_body(
    target: _Target,
    conn: HTTPConnection,
    response: BaseHTTPResponse,
    policy: FetchPolicy,
    deadline: _Deadline,
) -> bytes:
    encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding == "x-gzip":
        encoding = "gzip"
    if encoding not in ("identity", "gzip"):
        raise FetchError(f"{target.url}: unsupported Content-Encoding {encoding!r}")
    length = response.headers.get("Content-Length")
    if (
        length is not None
        and length.strip().isdigit()
        and int(length) > policy.max_bytes
    ):
        raise FetchError(
            f"{target.url}: refused, the document is larger than "
            f"{format_bytes(policy.max_bytes)} (idp.metadata_fetch_max_bytes)"
        )
    body = _Body(target.url, policy.max_bytes, encoding)
    while True:
        _set_timeout(conn, deadline.remaining(target.url))
        # read1: what one receive brings, so no read outlives the deadline.
        chunk = response.read1(_CHUNK, decode_content=False)
        if not chunk:
            break
        body.feed(chunk)
    if deadline.fired:
        # The end of a body without Content-Length is the connection's end,
        # which the deadline's cut looks like: the document is not whole.
        raise deadline.expired(target.url)
    return body.finish()


def _set_timeout(conn: HTTPConnection, seconds: float) -> None:
    # Each read waits at most until the whole fetch's deadline.
    if conn.sock is not None:
        conn.sock.settimeout(seconds)


def _exchange(
    target: _Target,
    headers: dict[str, str],
    policy: FetchPolicy,
    deadline: _Deadline,
) -> tuple[int, Mapping[str, str], bytes | None]:
    conn = _connect(target, policy, deadline)
    response: BaseHTTPResponse | None = None
    try:
        _set_timeout(conn, deadline.remaining(target.url))
        conn.request(
            "GET",
            target.path,
            headers={"Host": target.host_header, **headers},
            preload_content=False,
            decode_content=False,
        )
        response = conn.getresponse()
        status = response.status
        if status == 200:
            return (
                status,
                response.headers,
                _read_body(target, conn, response, policy, deadline),
            )
        return status, response.headers, None
    except (TimeoutError, ReadTimeoutError):
        raise deadline.expired(target.url) from None
    except (ProtocolError, http.client.HTTPException, HTTPError, OSError) as exc:
        cause = exc.__context__ if isinstance(exc, ProtocolError) else exc
        if deadline.fired or isinstance(cause, TimeoutError | ReadTimeoutError):
            raise deadline.expired(target.url) from None
        raise FetchError(
            f"{target.url}: the connection to {target.host} broke: {type(exc).__name__}"
        ) from None
    finally:
        if response is not None:
            response.close()
        conn.close()


def fetch(
    url: str,
    *,
    policy: FetchPolicy,
    etag: str | None = None,
    last_modified: str | None = None,
    accept: str = ACCEPT_METADATA,
) -> Fetched:
    """GET ``url`` under ``policy`` (see the module docstring); :class:`FetchError`.

    With ``etag`` or ``last_modified`` (from an earlier :class:`Fetched`) the
    request is conditional, and an unchanged document answers 304 with no
    body. Any status other than 200, 304 or a redirect is a FetchError
    carrying it.
    """
    deadline = _Deadline(policy.timeout)
    try:
        return _fetch(url, policy, deadline, etag, last_modified, accept)
    finally:
        deadline.cancel()


def _fetch(
    url: str,
    policy: FetchPolicy,
    deadline: _Deadline,
    etag: str | None,
    last_modified: str | None,
    accept: str,
) -> Fetched:
    headers = {
        "Accept": accept,
        "Accept-Encoding": "gzip",
        "User-Agent": USER_AGENT,
        "Connection": "close",
    }
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    current = url
    for _hop in range(policy.max_redirects + 1):
        target = _vet(current, policy, deadline)
        status, answer, body = _exchange(target, headers, policy, deadline)
        if status in REDIRECT_STATUSES:
            location = answer.get("Location")
            if not location:
                raise FetchError(f"{target.url}: HTTP {status} without a Location")
            current = urljoin(target.url, location.strip())
            continue
        new_etag = _validator(answer.get("ETag"))
        new_modified = _validator(answer.get("Last-Modified"), MAX_LAST_MODIFIED_LENGTH)
        if status == 200:
            return Fetched(200, body, new_etag, new_modified, target.url)
        if status == 304 and (etag or last_modified):
            return Fetched(
                304,
                None,
                new_etag or etag,
                new_modified or last_modified,
                target.url,
            )
        reason = http.client.responses.get(status, "")
        raise FetchError(
            f"{target.url}: HTTP {status} {reason}".rstrip(), status=status
        )
    raise FetchError(f"{_shown(url)}: more than {policy.max_redirects} redirects")
