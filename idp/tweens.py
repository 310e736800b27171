"""Checks every request passes first, and headers every response carries.

- A Host the IdP does not serve is refused (400): links in pages and mail are
  built from ``idp.base_url``, and a forged Host must not steer anything.
- A body larger than ``idp.max_request_body`` is refused (413) before a view
  reads it (waitress enforces the same bound on chunked bodies).
- A path, query or form body that is not UTF-8 once percent-decoded, or a
  form body WebOb cannot parse (another charset, a bad multipart boundary)
  or that holds a file, is refused (400) before anything decodes it
  (OPS-09): WebOb raises wherever it is read, the error page included.
- Security headers: a CSP without inline script (``request.csp``, see
  :mod:`idp.csp`), no framing, no referrer outside the site, no sniffing,
  HSTS outside development.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from pyramid.httpexceptions import HTTPBadRequest, HTTPRequestEntityTooLarge

from idp import csp
from idp.routes import HEALTH_PATH, METRICS_PATH

# What a page with no additions sends (see idp/csp.py).
CONTENT_SECURITY_POLICY = csp.BASE_HEADER

BASE_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer browsers send
    # "Origin: null" on POST, which defeats the CSRF origin check. Pages
    # whose URL holds a token set no-referrer themselves.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
HSTS = "max-age=31536000; includeSubDomains"


def allowed_hosts(settings) -> frozenset[str]:
    base = urlsplit(settings["idp.base_url"])
    default_port = 443 if base.scheme == "https" else 80
    hosts = {base.netloc.lower()}
    if base.port in (None, default_port):
        hosts.add(f"{base.hostname}:{default_port}")
    hosts.update(h.strip().lower() for h in settings["idp.allowed_hosts"].split())
    return frozenset(hosts)


# Where the original, undecodable target of a refused request is kept (as
# printable text) for the log line, since the request itself is rewritten.
RAW_TARGET_KEY = "idp.raw_target"


def _wire_text(value: str) -> str:
    """A WSGI native string (bytes as Latin-1) decoded as the UTF-8 it must be."""
    return value.encode("latin-1").decode("utf-8")


def undecodable_part(environ) -> str | None:
    """The first part of the request target that is not UTF-8, or None.

    PEP 3333 hands the path (already percent-decoded by the server) and the
    raw query as bytes in Latin-1 clothing; WebOb decodes them as UTF-8
    whenever ``request.path`` or ``request.GET`` is read, and raises.
    """
    for key in ("SCRIPT_NAME", "PATH_INFO"):
        try:
            _wire_text(environ.get(key, ""))
        except (UnicodeEncodeError, UnicodeDecodeError):
            return "path"
    try:
        query = environ.get("QUERY_STRING", "").encode("latin-1")
    except UnicodeEncodeError:
        return "query"
    return None if _decodes_as_query(query) else "query"


def _decodes_as_query(data: bytes) -> bool:
    try:
        parse_qsl(
            data.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
        )
    except UnicodeDecodeError:
        return False
    return True


FORM_TYPES = ("", "application/x-www-form-urlencoded", "multipart/form-data")
# path -> the fields of its form that take a file: the console's SP
# metadata upload (idp/views/admin_registry.py), and nothing else.
FILE_FIELDS = {"/admin/sps/upload": frozenset({"metadata"})}
# What WebOb raises parsing a form body it cannot read: DeprecationWarning
# for a charset other than UTF-8, ValueError for a bad multipart boundary,
# TypeError for a multipart body cgi cannot index, LookupError for an
# unknown encoding.
_FORM_ERRORS = (
    DeprecationWarning,
    ValueError,
    TypeError,
    LookupError,
    UnicodeDecodeError,
)


def unreadable_form(request) -> bool:
    """Whether the form body would make WebOb raise, is not UTF-8, or holds a file.

    Only what ``request.POST`` would parse is looked at, and it is parsed
    here, once (WebOb keeps the result for the view). An urlencoded body
    must decode strictly, like the query; in a multipart body cgi puts
    U+FFFD for a byte that is not UTF-8 instead of raising.
    """
    content_type = request.content_type
    if content_type not in FORM_TYPES or (
        request.method != "POST" and not content_type
    ):
        return False
    if content_type != "multipart/form-data" and not _decodes_as_query(request.body):
        return True
    try:
        fields = request.POST
    except _FORM_ERRORS:
        return True
    # Only the forms in FILE_FIELDS take a file, in the field named there;
    # anywhere else an upload (a cgi FieldStorage, on which the form
    # library raises TypeError) is refused here.
    allowed = FILE_FIELDS.get(request.path_info, frozenset())
    return not all(
        isinstance(value, str) or name in allowed for name, value in fields.items()
    )


def printable_path(environ) -> str:
    """The request's path for a log line; never raises, whatever the bytes.

    The query is left out: it can hold tokens and whole SAML messages.
    """
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    raw = path.encode("latin-1", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")[:512]


def _decodable_target(environ, part: str) -> None:
    """Rewrite the target so the error page can read it: the site's root,
    keeping only the query pairs that decode (``?lang=`` still chooses the
    page's language)."""
    raw = environ.get("QUERY_STRING", "").encode("latin-1", "replace")
    pairs = []
    for pair in raw.split(b"&"):
        try:
            pairs.extend(
                parse_qsl(
                    pair.decode("utf-8"),
                    keep_blank_values=True,
                    encoding="utf-8",
                    errors="strict",
                )
            )
        except UnicodeDecodeError:
            continue
    environ[RAW_TARGET_KEY] = f"{printable_path(environ)} (undecodable {part})"
    environ["SCRIPT_NAME"] = ""
    environ["PATH_INFO"] = "/"
    environ["QUERY_STRING"] = urlencode(pairs)


def sanity_tween_factory(handler, registry):
    settings = registry.settings
    hosts = allowed_hosts(settings)
    max_body = settings["idp.max_request_body"]

    def sanity_tween(request):
        part = undecodable_part(request.environ)
        if part is not None:
            _decodable_target(request.environ, part)
            return _refuse(request, HTTPBadRequest())
        if request.host.lower() not in hosts and not _health_probe(request):
            return _refuse(request, HTTPBadRequest())
        if request.content_length is not None and request.content_length > max_body:
            # The retry policy may already have spooled the body to a
            # temporary file so it could replay it; release it now.
            if request.is_body_seekable:
                request.body_file_raw.close()
            return _refuse(request, HTTPRequestEntityTooLarge())
        if unreadable_form(request):
            return _refuse(request, HTTPBadRequest())
        return handler(request)

    return sanity_tween


def _health_probe(request) -> bool:
    """A load balancer's probe or a metrics scraper, which name the node by
    address, not by host (each node is scraped on its own).

    Only the exact paths, read-only: the health and metrics views build no URL from
    the Host header and sets no cookie, so skipping the check there lets no
    forged host into a link or a session.
    """
    return request.path_info in (HEALTH_PATH, METRICS_PATH) and request.method in (
        "GET",
        "HEAD",
    )


def _refuse(request, exc):
    # Render through the exception views so the refusal is the same
    # bilingual page as any other; the body is never read.
    return request.invoke_exception_view(exc_info=(type(exc), exc, None))


def security_headers_tween_factory(handler, registry):
    hsts = not registry.settings["idp.development"]

    def security_headers_tween(request):
        response = handler(request)
        headers = response.headers
        for name, value in BASE_HEADERS.items():
            headers.setdefault(name, value)
        # Set, never defaulted: the policy is request.csp's, whoever built
        # the response.
        headers["Content-Security-Policy"] = csp.header_for(request, response)
        if hsts:
            headers.setdefault("Strict-Transport-Security", HSTS)
        if response.content_type == "text/html":
            headers.setdefault("Cache-Control", "no-store")
        return response

    return security_headers_tween


def client_addr(request) -> str | None:
    """The client's address: ``REMOTE_ADDR``, as waitress gives it.

    That is the connection's peer, or, when the peer is a trusted proxy
    (``trusted_proxy`` in ``[server:main]``), the address the proxy
    reported. WebOb's own ``client_addr`` reads the first entry of
    ``X-Forwarded-For`` whoever sent it, leaving every rate limit, lock and
    audit line keyed by address to the server's clearing an untrusted header
    (waitress does by default; another WSGI server may not), else a script
    names a new address on every request (AUTH-27).
    """
    return request.environ.get("REMOTE_ADDR")


def includeme(config):
    from pyramid.tweens import EXCVIEW, INGRESS

    config.add_request_method(client_addr, "client_addr", property=True, reify=True)

    config.add_tween("idp.tweens.security_headers_tween_factory", under=INGRESS)
    config.add_tween(
        "idp.tweens.sanity_tween_factory",
        under="idp.tweens.security_headers_tween_factory",
        over=EXCVIEW,
    )
