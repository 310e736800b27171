"""The ministry's crest in the page footer, when the operator provides one.

The project ships no crest: a national emblem is not ours to distribute. An
operator sets ``idp.crest.path`` to either

- a file (absolute, or relative to the ini file's directory): a PNG, JPEG,
  GIF, WebP or SVG image of at most :data:`MAX_BYTES`, read once at start
  and served at ``/crest``; or
- an ``http(s)://`` URL on the IdP's own origin (``idp.base_url``), for a
  crest the front proxy serves; another origin is refused, so the footer
  never makes every visitor's browser call a third party;

and gives its text alternative in both languages (``idp.crest.alt_ms``,
``idp.crest.alt_en``): an image without one fails WCAG 1.1.1.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from idp.units import format_over

MAX_BYTES = 512 * 1024

# Suffix -> (content type, a test the file's first bytes must pass).
_SVG_HEAD = 1024
_KINDS = {
    ".png": ("image/png", "PNG", lambda head: head.startswith(b"\x89PNG\r\n\x1a\n")),
    ".jpg": ("image/jpeg", "JPEG", lambda head: head.startswith(b"\xff\xd8\xff")),
    ".jpeg": ("image/jpeg", "JPEG", lambda head: head.startswith(b"\xff\xd8\xff")),
    ".gif": ("image/gif", "GIF", lambda head: head[:6] in (b"GIF87a", b"GIF89a")),
    ".webp": (
        "image/webp",
        "WebP",
        lambda head: head[:4] == b"RIFF" and head[8:12] == b"WEBP",
    ),
    ".svg": ("image/svg+xml", "SVG", lambda head: b"<svg" in head[:_SVG_HEAD]),
}


class CrestError(ValueError):
    """The crest settings are wrong; the message names the setting."""


@dataclass(frozen=True)
class Crest:
    """What the footer shows: ``url`` (same origin) or ``data`` served at /crest."""

    alt: dict[str, str]
    url: str | None = None
    data: bytes | None = None
    content_type: str | None = None

    @property
    def etag(self) -> str | None:
        return hashlib.sha256(self.data).hexdigest()[:32] if self.data else None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _from_url(value: str, base_url: str) -> str:
    try:
        same = _origin(value) == _origin(base_url) and urlsplit(value).path[:1] == "/"
    except ValueError:
        same = False
    if not same:
        raise CrestError(
            f"idp.crest.path: a URL must be on the same origin as idp.base_url "
            f"({base_url}/...), got {value!r}"
        )
    return value


def _from_file(value: str, here: str) -> tuple[bytes, str]:
    path = Path(value)
    if not path.is_absolute():
        path = Path(here) / path
    kind = _KINDS.get(path.suffix.lower())
    if kind is None:
        raise CrestError(
            f"idp.crest.path: must end in {', '.join(sorted(_KINDS))} "
            f"or be a same-origin URL, got {value!r}"
        )
    if not path.is_file():
        raise CrestError(f"idp.crest.path: no such file {str(path)!r}")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise CrestError(f"idp.crest.path: the file is {format_over(size, MAX_BYTES)}")
    data = path.read_bytes()
    content_type, name, looks_right = kind
    if not looks_right(data):
        raise CrestError(f"idp.crest.path: {str(path)!r} is not a {name} image")
    return data, content_type


def load(settings: dict) -> Crest | None:
    """The crest from ``settings``, or None when none is configured.

    Raises :class:`CrestError` naming the first wrong setting.
    """
    value = settings.get("idp.crest.path", "")
    alt = {
        "ms": settings.get("idp.crest.alt_ms", ""),
        "en": settings.get("idp.crest.alt_en", ""),
    }
    if not value:
        if any(alt.values()):
            raise CrestError(
                "idp.crest.path: required when idp.crest.alt_ms or alt_en is set"
            )
        return None
    for locale, text in alt.items():
        if not text:
            raise CrestError(
                f"idp.crest.alt_{locale}: required when idp.crest.path is set "
                "(the crest's text alternative)"
            )
    if value.lower().startswith(("http://", "https://")):
        return Crest(alt=alt, url=_from_url(value, settings["idp.base_url"]))
    data, content_type = _from_file(value, settings.get("here", "."))
    return Crest(alt=alt, data=data, content_type=content_type)
