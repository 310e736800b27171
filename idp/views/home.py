"""The home page ("Modul saya" once signed in).

A visitor gets the ways in: sign in and register. A signed-in user gets the
module portal: every service their roles reach, each link starting
IdP-initiated single sign-on (see :mod:`idp.portal`).
"""

from pyramid.view import view_config

from idp.portal import reachable_services


@view_config(route_name="home", renderer="home/index.jinja2")
def index(request):
    user = request.identity
    if user is None:
        return {"services": None}
    return {
        "services": reachable_services(request.dbsession, user.id, request.locale_name)
    }
