"""Two-step verification in tests: a frozen clock, codes made from the secret.

The pages read their time from the WSGI environ's ``idp.clock`` when it is
there (``idp.services.two_factor.clock_of``), so ``browser`` opens a client
on a :class:`Clock` the test moves by hand: no sleeps, and a code is never
caught by a step boundary. ``enable`` turns the second factor on through the
service, as the setup page does; ``to_code_page`` signs in up to the code
step; ``submit_code`` and ``submit_recovery`` fill its two forms.
"""

from __future__ import annotations

import base64
import datetime as dt

import webtest

from idp.services.audit import AuditLog
from idp.services.mail import Composer, Outbox, OutboxCodec
from idp.services.two_factor import (
    STEP_SECONDS,
    SecretBox,
    TwoFactorService,
    hotp,
    recovery_code_key,
    step_of,
)
from tests.app import environ
from tests.factories import PASSWORD
from tests.signin import sign_in, submit

# Five seconds into a 30-second step, so "one step later" is plain arithmetic.
FROZEN = dt.datetime(2026, 12, 4, 9, 0, 5, tzinfo=dt.UTC)
STEP = dt.timedelta(seconds=STEP_SECONDS)


class Clock:
    """A settable clock, ``now`` from :data:`FROZEN`."""

    def __init__(self, now: dt.datetime = FROZEN) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


def browser(app, tm, dbsession, clock: Clock, address: str = "192.0.2.10"):
    """A browser whose pages see ``clock``'s time, in the test's transaction."""
    extra = environ(tm, dbsession, REMOTE_ADDR=address)
    extra["idp.clock"] = clock
    return webtest.TestApp(app, extra_environ=extra)


def code_for(secret: str, moment: dt.datetime, steps: int = 0) -> str:
    """The code an authenticator app holding ``secret`` shows at ``moment``,
    or ``steps`` steps later (earlier if negative)."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    return hotp(key, step_of(moment) + steps)


def wrong_codes(secret: str, clock: Clock):
    """Codes in order from 000000, skipping any ``clock``'s steps would accept."""
    right = {code_for(secret, clock(), steps) for steps in (-1, 0, 1)}
    return (f"{n:06d}" for n in range(10**6) if f"{n:06d}" not in right)


def service(app, dbsession, clock: Clock) -> TwoFactorService:
    """The two-factor service as a request of ``app`` builds it, on ``clock``.

    ``app`` may also be a settings dict (an ``idp-admin`` ini's): the service
    is then built from its keys as the command's would be.
    """
    if isinstance(app, dict):
        secret = app["idp.hmac_key"]
        box, code_key = SecretBox(secret), recovery_code_key(secret)
        composer, codec = Composer(app), OutboxCodec(secret)
    else:
        registry = app.registry
        box = registry["idp.two_factor.box"]
        code_key = registry["idp.two_factor.code_key"]
        composer, codec = registry["idp.mail.composer"], registry["idp.mail.codec"]
    return TwoFactorService(
        dbsession,
        box=box,
        code_key=code_key,
        audit=AuditLog(dbsession),
        outbox=Outbox(dbsession, composer, codec),
        clock=clock,
    )


def enable(app, dbsession, user, clock: Clock) -> tuple[str, list[str]]:
    """Turn ``user``'s second factor on; its secret and recovery codes.

    It is confirmed three steps before ``clock``'s time, so every code a
    sign-in at ``clock``'s time could accept is still unused.
    """
    earlier = Clock(clock() - 3 * STEP)
    two_factor = service(app, dbsession, earlier)
    secret = two_factor.begin(user).secret
    codes = two_factor.confirm(user, code_for(secret, earlier()))
    assert codes is not None
    return secret, codes


def to_code_page(client, user, password: str = PASSWORD, **where):
    """Sign in with the password; return the code step's page."""
    done = sign_in(client, user, password, **where)
    assert done.location.endswith("/login/code"), done.location
    return done.follow()


def submit_code(page, code: str, **kwargs):
    return submit(page, "code-form", {"code": code}, **kwargs)


def submit_recovery(page, code: str, **kwargs):
    return submit(page, "recovery-form", {"recovery_code": code}, **kwargs)
