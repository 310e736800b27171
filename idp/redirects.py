"""Where a user may be sent after signing in: this site's own pages only."""

from __future__ import annotations

from urllib.parse import urlsplit

MAX_LENGTH = 2000


def safe_next(value: str | None) -> str | None:
    """Return ``value`` if it is a path on this site, else None.

    Only absolute paths are accepted: no scheme, no host, no ``//`` or
    ``/\\`` prefix (browsers read both as another host), no backslash or
    control character anywhere. The value is checked after WebOb has
    percent-decoded it, so encoded forms of these are caught too.
    """
    if not value or len(value) > MAX_LENGTH:
        return None
    if not value.startswith("/") or value.startswith(("//", "/\\")):
        return None
    if "\\" in value or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value


def origin(url: str) -> str:
    """``scheme://host[:port]`` of an absolute URL (for CSP sources)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
