"""The home page: the sign-in form, or "Modul saya" once signed in.

A signed-out visitor lands on the identifier step itself (the same form as
``/login``, posting there), with "Daftar Baharu" and "Lupa Kata Laluan"
beside its button: no extra click to reach it. A signed-in user gets the
module portal: every service their roles reach, each link starting
IdP-initiated single sign-on (see :mod:`idp.portal`).
"""

from pyramid.view import view_config

from idp.portal import reachable_services
from idp.views.login import identifier_start


@view_config(route_name="home", renderer="home/index.jinja2")
def index(request):
    user = request.identity
    if user is None:
        return {"services": None, **identifier_start(request)}
    return {
        "services": reachable_services(request.dbsession, user.id, request.locale_name)
    }
