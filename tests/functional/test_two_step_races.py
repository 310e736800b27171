"""Two requests with one code at the same instant: only one passes.

A code seen over a shoulder and typed at once in another browser, or a
recovery code sent twice by a double click: the check and the use are one
conditional ``UPDATE``, so on PostgreSQL the second request waits on the
row the first updated and then finds its condition false. (SQLite runs one
writer at a time: there is no race to lose there.)
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.orm import Session

from idp.db import Base
from idp.services.audit import audit_maintenance
from idp.services.two_factor import Verdict
from tests.factories import make_user
from tests.two_step import Clock, code_for, enable, service

pytestmark = pytest.mark.postgresql


@pytest.fixture
def committed(app, db_engine):
    """A committed user with two-step verification on; every table emptied after."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writer at a time: there is no race to lose")
    clock = Clock()
    with Session(db_engine, expire_on_commit=False) as session:
        user = make_user(session)
        secret, codes = enable(app, session, user, clock)
        session.commit()
    yield user, secret, codes, clock
    with db_engine.begin() as conn, audit_maintenance(conn):
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


def race(app, db_engine, user, clock, code: str) -> tuple[Verdict, Verdict]:
    """``code`` checked by two transactions, the second while the first is open."""
    first, second = Session(db_engine), Session(db_engine)
    try:
        mine = first.merge(user, load=True)
        verdict = service(app, first, clock).verify(mine, code)
        first.flush()
        seen = []

        def other() -> None:
            theirs = second.merge(user, load=True)
            seen.append(service(app, second, clock).verify(theirs, code))

        racer = threading.Thread(target=other)
        racer.start()
        racer.join(0.5)
        assert racer.is_alive(), "the second check waits for the first"
        first.commit()
        racer.join(10)
        second.commit()
        return verdict, seen[0]
    finally:
        first.close()
        second.close()


def test_a_code_typed_twice_at_once_passes_once(app, db_engine, committed):
    user, secret, _codes, clock = committed
    code = code_for(secret, clock())
    assert race(app, db_engine, user, clock, code) == (Verdict.TOTP, Verdict.WRONG)


def test_a_recovery_code_sent_twice_at_once_passes_once(app, db_engine, committed):
    user, _secret, codes, clock = committed
    assert race(app, db_engine, user, clock, codes[0]) == (
        Verdict.RECOVERY,
        Verdict.WRONG,
    )
