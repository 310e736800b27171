"""CSRF on for every view, and views accept only the methods they declare.

``require_csrf`` is the default (checked by Pyramid before the view runs, on
every method but GET/HEAD/OPTIONS/TRACE); the token lives in the server-side
session. The ``require_methods`` view option refuses undeclared methods
with 405: a view takes GET and HEAD unless it says otherwise, so a
state-changing view must name POST, and nothing is reachable by surprise.
Method-override headers are never honoured.
"""

from pyramid.httpexceptions import HTTPMethodNotAllowed
from pyramid.viewderivers import INGRESS

SAFE_METHODS = ("GET", "HEAD")


def require_methods_deriver(view, info):
    methods = info.options.get("require_methods", SAFE_METHODS)
    if methods is False or info.exception_only:
        return view
    allowed = frozenset(methods)

    def wrapped(context, request):
        if request.method not in allowed:
            raise HTTPMethodNotAllowed(headers={"Allow": ", ".join(sorted(allowed))})
        return view(context, request)

    return wrapped


require_methods_deriver.options = ("require_methods",)


def includeme(config):
    config.set_default_csrf_options(
        require_csrf=True,
        token="csrf_token",  # noqa: S106 (the form field name, not a secret)
        header="X-CSRF-Token",
    )
    config.add_view_deriver(require_methods_deriver, under=INGRESS)
