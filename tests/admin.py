"""The admin console in tests: admins made as the CLI makes them, signed in
through the real pages (password, then the code step).

``make_admin`` gives a user admin roles (through ``AdminRoles``, as
``idp-admin admin grant`` does) and, unless told otherwise, turns two-step
verification on. ``admin_browser`` opens a browser on a :class:`Clock`
that starts at the real time (the session's sign-in time is the real
clock's; the console compares it with the request's clock, which the test
then moves, for the 15-minute re-authentication) and signs the admin in
with a code. ``form_page`` and ``post`` fill the console's forms.
"""

from __future__ import annotations

from idp.db import utcnow
from idp.services.actor import Actor
from idp.services.admin import AdminRoles
from idp.services.audit import AuditLog
from idp.services.mail import Outbox
from tests.factories import PASSWORD, make_user
from tests.signin import sign_in, submit
from tests.two_step import Clock, browser, code_for, enable, submit_code


def now_clock() -> Clock:
    return Clock(utcnow())


def make_admin(app, dbsession, clock, *roles: str, two_step: bool = True, **values):
    """A user holding ``roles``; ``user.secret`` is their authenticator's."""
    user = make_user(dbsession, **values)
    registry = app.registry
    outbox = Outbox(
        dbsession, registry["idp.mail.composer"], registry["idp.mail.codec"]
    )
    grants = AdminRoles(dbsession, audit=AuditLog(dbsession), outbox=outbox)
    for role in roles:
        grants.grant(user, role, actor=Actor.command_line())
    user.secret = None
    if two_step:
        user.secret, user.recovery_codes = enable(app, dbsession, user, clock)
    return user


def admin_browser(app, tm, dbsession, clock, user, address: str = "192.0.2.10"):
    """A browser at ``address`` where ``user`` signed in with the password
    and, if they have one, a code from their authenticator."""
    client = browser(app, tm, dbsession, clock, address)
    done = sign_in(client, user, PASSWORD)
    if user.secret is not None:
        done = submit_code(done.follow(), code_for(user.secret, clock()), status=303)
    return client


def post(page, form_id: str, values: dict | None = None, **kwargs):
    """Send the console form ``form_id`` of ``page`` (its CSRF token included)."""
    return submit(page, form_id, values or {}, **kwargs)


__all__ = ["PASSWORD", "Clock", "admin_browser", "make_admin", "now_clock", "post"]
