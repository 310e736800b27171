"""The administrative services as a front end gets them, in the test's transaction.

``services(app, tm, dbsession)`` gives a function that returns the request's
one instance of a service (``service(IModuleRegistry)``), built by the
app's own factories on the test's database session, as a console view's
``request.service`` will. ``CONSOLE`` is an actor with who and where, as the
console will pass; ``idp-admin``'s own is ``Actor.command_line()``.
"""

from __future__ import annotations

import uuid

from pyramid.scripting import prepare

from idp.services.actor import Actor
from tests.app import app_request, environ

CONSOLE = Actor(
    "admin-console",
    user_id=uuid.UUID("00000000-0000-4000-8000-00000000a0a0"),
    address="192.0.2.44",
)


def services(app, tm, dbsession):
    """``lookup(IFoo)``: the service for ``IFoo`` on a request in the test's
    transaction; ``lookup.close()`` ends the request."""
    request = app_request(app.registry, "/", **environ(tm, dbsession))
    env = prepare(request=request, registry=app.registry)

    def lookup(iface):
        return env["request"].service(iface)

    lookup.close = env["closer"]
    return lookup


def audited(dbsession, event: str) -> list[tuple]:
    """``(detail, actor_user_id, client_address, subject_user_id)`` of each
    ``event``, oldest first."""
    from tests.factories import events

    return [
        (row.detail, row.actor_user_id, row.client_address, row.subject_user_id)
        for row in events(dbsession, event)
    ]
