"""The Content-Security-Policy: one strict base, widened per page, sent once.

Every request has its own policy, ``request.csp``, a copy of :data:`BASE`.
A page that needs more adds sources to it, from wherever the need arises
(the view, a helper rendering a hosted captcha, the SAML POST form)::

    request.csp.add("form-action", origin(acs_url))
    request.csp.merge(captcha.csp)

and the security-headers tween (:mod:`idp.tweens`) serialises it once, as
the response leaves. Additions merge: two callers adding to one directive
both get their sources, in order, each once.

Additions only ever name what a page needs, so the base is never loosened:
every base source stays; ``default-src``, ``object-src`` and ``base-uri``
take nothing; a directive whose base is ``'none'`` opens only through a
method that says so (:meth:`ContentSecurityPolicy.allow_framing_by_self`);
and keywords and wildcards that switch protections off (``'unsafe-inline'``,
``*``, a bare scheme such as ``https:``) are refused with a ``ValueError``.

The additions belong to the page the view renders on ``request.response``.
Any other response, a redirect or an error page answering instead, gets the
base policy, as it did when pages set the header on ``request.response``
themselves: what one page needed must not widen another.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

SELF = "'self'"
NONE = "'none'"

BASE: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "default-src": (SELF,),
        "script-src": (SELF,),
        "style-src": (SELF,),
        "img-src": (SELF, "data:", "https:"),
        "font-src": (SELF,),
        "connect-src": (SELF,),
        "object-src": (NONE,),
        "base-uri": (NONE,),
        "frame-ancestors": (NONE,),
        "form-action": (SELF,),
    }
)
# Directives no page widens: the fallback for every fetch directive not
# named, plugins, and where relative URLs resolve.
FIXED = frozenset({"default-src", "object-src", "base-uri"})
# Sources that switch a protection off rather than name what a page needs.
UNSAFE = frozenset(
    {
        "*",
        "'unsafe-inline'",
        "'unsafe-eval'",
        "'unsafe-hashes'",
        "'unsafe-allow-redirects'",
        "'strict-dynamic'",
        "'wasm-unsafe-eval'",
    }
)


def _refused(source: str) -> str | None:
    """Why ``source`` may not be added, or None."""
    if not source or any(ch.isspace() or ch in ";," for ch in source):
        return "is not one source"
    if source.lower() in UNSAFE:
        return "switches a protection off"
    if source.endswith(":") or source.startswith("*"):
        return "is a wildcard"
    return None


class ContentSecurityPolicy:
    """A policy under construction: :data:`BASE` (or ``base``) plus additions."""

    def __init__(self, base: Mapping[str, Iterable[str]] = BASE) -> None:
        self._directives = {name: list(sources) for name, sources in base.items()}

    def add(self, directive: str, *sources: str) -> None:
        """Allow ``sources`` for ``directive`` on this page, besides the base's.

        A directive the base does not name starts from ``'self'``, as
        ``default-src`` would have given it. Raises ``ValueError`` for a
        directive that is fixed or ``'none'``, and for an unsafe source.
        """
        current = self._directives.get(directive)
        if directive in FIXED or current == [NONE]:
            raise ValueError(f"CSP: {directive} is not widened by a page")
        for source in sources:
            reason = _refused(source)
            if reason is not None:
                raise ValueError(f"CSP: {source!r} for {directive} {reason}")
        current = self._directives.setdefault(directive, [SELF])
        current.extend(dict.fromkeys(s for s in sources if s not in current))

    def merge(self, additions: Mapping[str, Iterable[str]]) -> None:
        """:meth:`add` each directive's sources (a hosted captcha's, say)."""
        for directive, sources in additions.items():
            self.add(directive, *sources)

    def allow_framing_by_self(self) -> None:
        """Let the IdP's own pages frame this one (``frame-ancestors 'self'``).

        For the pages single logout shows inside its status page's frames;
        no other site may frame them.
        """
        self._directives["frame-ancestors"] = [SELF]

    def __str__(self) -> str:
        return "; ".join(
            " ".join((name, *sources)) for name, sources in self._directives.items()
        )


#: The header of every response that added nothing (the proxy's copy of it
#: in the README is held equal by the tests).
BASE_HEADER = str(ContentSecurityPolicy())


def header_for(request, response) -> str:
    """The policy to send with ``response``: the page's own, or the base."""
    policy = request.__dict__.get("csp")
    if policy is None or response is not request.__dict__.get("response"):
        return BASE_HEADER
    return str(policy)


def request_policy(request) -> ContentSecurityPolicy:
    """``request.csp``: this request's own copy of the base policy."""
    return ContentSecurityPolicy()


def includeme(config) -> None:
    config.add_request_method(request_policy, "csp", reify=True)
