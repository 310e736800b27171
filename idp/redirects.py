"""Where a user may be sent after signing in: this site's own pages only."""

from __future__ import annotations

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


def origin(url: str) -> str:
    """``scheme://host[:port]`` of an absolute URL (for CSP sources)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
