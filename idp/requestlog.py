"""One log line per request: ``GET /login 200 7.3ms ref=KXTBQMRZDHWP``.

Logged at INFO on the ``idp.requests`` logger (development.ini shows it,
production.ini keeps it at WARNING unless an operator wants it). The line
never holds what may carry a secret:

* no query string (SAMLRequest, RelayState, ``?token=``...);
* for a route with placeholders, its pattern, not the path that matched it:
  ``/password/reset/{token}``, never the reset token itself (WEB-13).

Each request gets a reference (``request.reference``), the same one an
error page shows the user, so a user quoting it leads to this line.
References are twelve consonants: no digits, so the log mask
(:mod:`idp.logmask`) never takes one for a phone or MyKad number and
rewrites the line's copy (a hex reference such as ``0123457152CD`` came out
as ``XXXXX7152CD``, and the user's quote then matched nothing), and no
vowels, so none spells a word. 20^12 is about 2^52.
"""

from __future__ import annotations

import logging
import secrets
import time

from pyramid_retry import is_error_retryable

from idp import metrics

log = logging.getLogger("idp.requests")

# Paths nothing routed (404s, probes) are printed as sent, only shorter and
# with anything unprintable escaped, so a hostile path cannot forge lines.
PATH_MAX = 200


REFERENCE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
REFERENCE_LENGTH = 12
# What tests and log readers match a reference with.
REFERENCE_PATTERN = f"[{REFERENCE_ALPHABET}]{{{REFERENCE_LENGTH}}}"


def new_reference() -> str:
    return "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(REFERENCE_LENGTH))


def _reference(request) -> str:
    return new_reference()


def logged_path(request) -> str:
    route = getattr(request, "matched_route", None)
    if route is not None and "{" in route.pattern:
        path = route.pattern
        if not path.startswith("/"):
            path = "/" + path
        return path
    path = request.environ.get("PATH_INFO", "") or "/"
    # PATH_INFO holds the raw bytes as latin-1: escape all but printable ASCII.
    path = path.encode("latin-1", "backslashreplace").decode(
        "ascii", "backslashreplace"
    )
    path = "".join(
        char if char.isprintable() else f"\\x{ord(char):02x}" for char in path
    )
    if len(path) > PATH_MAX:
        path = path[:PATH_MAX] + "..."
    return path


def request_log_tween_factory(handler, registry):
    def request_log_tween(request):
        start = time.perf_counter()
        status = 500
        raised: BaseException | None = None
        with metrics.attempt() as held:
            try:
                response = handler(request)
                status = response.status_int
                return response
            except BaseException as exc:
                raised = exc
                raise
            finally:
                error = raised or getattr(request, "exception", None)
                if error is None or not is_error_retryable(request, error):
                    _answered(request, status, time.perf_counter() - start, held)
                # Else pyramid_retry runs the request again (a serialization
                # failure or deadlock): this attempt answered nobody, and its
                # counts and line would be the request's twice.

    return request_log_tween


def _answered(request, status: int, seconds: float, held) -> None:
    """The request's counts (those its views held, and its own) and line."""
    metrics.count_held(held)
    route = getattr(request, "matched_route", None)
    # The route's name, never the path: a bounded label set.
    metrics.request_done(route.name if route else None, status, seconds)
    if log.isEnabledFor(logging.INFO):
        log.info(
            "%s %s %d %.1fms ref=%s",
            request.method,
            logged_path(request),
            status,
            seconds * 1000,
            request.reference,
        )


def includeme(config) -> None:
    from pyramid.tweens import INGRESS

    config.add_request_method(_reference, "reference", reify=True)
    # Outermost: the time includes every other tween. pyramid_retry runs
    # outside the tweens, so each attempt passes here (see above).
    config.add_tween(
        "idp.requestlog.request_log_tween_factory",
        under=INGRESS,
        over="idp.tweens.security_headers_tween_factory",
    )
