"""Every failure becomes a bilingual page with a stable code and a reference.

No exception text, SQL, path or traceback reaches the browser; the
reference ID is logged with the traceback so an operator can find it.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from pyramid.exceptions import BadCSRFOrigin, BadCSRFToken
from pyramid.httpexceptions import HTTPException, HTTPSeeOther
from pyramid.view import (
    exception_view_config,
    forbidden_view_config,
    notfound_view_config,
)

from idp.i18n import _, other_locale, translate_in
from idp.saml.keys import KeyPairError
from idp.tweens import RAW_TARGET_KEY

log = logging.getLogger(__name__)

# status -> (stable code, title, explanation)
PAGES = {
    400: (
        "bad_request",
        _("The request could not be understood"),
        _("Please go back and try again."),
    ),
    403: (
        "forbidden",
        _("Access denied"),
        _("You do not have permission to open this page."),
    ),
    404: (
        "not_found",
        _("Page not found"),
        _("The page you asked for does not exist or has moved."),
    ),
    405: (
        "method_not_allowed",
        _("Action not allowed"),
        _("This page cannot be used that way."),
    ),
    413: (
        "too_large",
        _("Request too large"),
        _("What you sent is larger than this service accepts."),
    ),
    414: (
        "uri_too_long",
        _("Address too long"),
        _("The address you followed is longer than this service accepts."),
    ),
    500: (
        "server_error",
        _("Something went wrong"),
        _(
            "The service could not complete your request. "
            "Please try again later; if it keeps happening, contact the helpdesk "
            "and quote the reference below."
        ),
    ),
}
# This node lacks (or holds a wrong copy of) a key the database lists: it
# signs nothing rather than sign with a key the partners were not told about.
KEYS_PAGE = (
    "keys_unavailable",
    _("Sign-in is unavailable on this server"),
    _(
        "This server cannot sign sign-in responses right now. Please try "
        "again in a few minutes; if it keeps happening, contact the helpdesk "
        "and quote the reference below."
    ),
)
CSRF_PAGE = (
    "csrf",
    _("Your form has expired"),
    _(
        "For your security the form could not be accepted. "
        "Please open the page again and resubmit."
    ),
)


def render_error(request, status: int, page=None, *, headers=None):
    code, title, explanation = (
        page or PAGES.get(status) or PAGES[500 if status >= 500 else 400]
    )
    # The request's own reference: its log line (idp.requestlog) has it too.
    reference = request.reference
    locale = request.locale_name
    second = other_locale(locale)
    request.response.status_int = status
    if headers:
        for name, value in headers.items():
            request.response.headers[name] = value
    return reference, {
        "status": status,
        "code": code,
        "reference": reference,
        "title": title,
        "explanation": explanation,
        "second_locale": second,
        "second_title": translate_in(request, title, second),
        "second_explanation": translate_in(request, explanation, second),
    }


def _target(request) -> str:
    """The path for a log line: the original one where the sanity tween
    rewrote an undecodable request (reading ``request.path`` would raise)."""
    return request.environ.get(RAW_TARGET_KEY) or request.path


def _http_error(exc, request):
    allow = exc.headers.get("Allow")
    reference, values = render_error(
        request, exc.status_int, headers={"Allow": allow} if allow else None
    )
    log.info(
        "refused %s %s: %s [%s]",
        request.method,
        _target(request),
        exc.status,
        reference,
    )
    return values


@notfound_view_config(renderer="errors/error.jinja2")
def not_found(exc, request):
    return _http_error(exc, request)


@forbidden_view_config(renderer="errors/error.jinja2")
def forbidden(exc, request):
    """Someone not signed in is sent to sign in, and brought back afterwards.

    An admin denied a console page may owe a step first (idp.views.admin).
    """
    if request.identity is None and request.method in ("GET", "HEAD"):
        query = urlencode({"next": request.path_qs})
        return HTTPSeeOther(f"{request.route_path('login.identifier')}?{query}")
    from idp.views.admin import gate_response

    step = gate_response(exc, request)
    if step is not None:
        return step
    return _http_error(exc, request)


@exception_view_config(BadCSRFToken, renderer="errors/error.jinja2")
@exception_view_config(BadCSRFOrigin, renderer="errors/error.jinja2")
def bad_csrf(exc, request):
    reference, values = render_error(request, 403, CSRF_PAGE)
    log.warning(
        "CSRF check failed on %s %s [%s]", request.method, _target(request), reference
    )
    return values


@exception_view_config(KeyPairError, renderer="errors/error.jinja2")
def keys_unusable(exc, request):
    reference, values = render_error(request, 503, KEYS_PAGE)
    log.error(
        "signing keys unusable on %s %s [%s]: %s",
        request.method,
        _target(request),
        reference,
        exc,
    )
    return values


@exception_view_config(HTTPException, renderer="errors/error.jinja2")
def http_error(exc, request):
    if exc.status_int < 400:
        # Redirects raised as exceptions pass through untouched.
        return exc
    return _http_error(exc, request)


@exception_view_config(Exception, renderer="errors/error.jinja2")
def server_error(exc, request):
    reference, values = render_error(request, 500)
    log.error(
        "unhandled error on %s %s [%s]",
        request.method,
        _target(request),
        reference,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return values
