"""Rows made directly in the database, and read back.

Users, modules and roles for tests that start past registration; ``count``
and ``events`` for what a request or a command wrote.
"""

from __future__ import annotations

import itertools

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from idp.models import AuditEvent, User
from idp.services.passwords import BcryptPasswordService

PASSWORD = "kopi o kosong tanpa gula"
# What the tests change a password to (a forced change, a reset, the CLI).
NEW_PASSWORD = "teh tarik kurang manis di kedai mamak"
HASHER = BcryptPasswordService(rounds=4)
_numbers = itertools.count(1)


def make_user(dbsession, *, password: str | None = PASSWORD, **values) -> User:
    """A registered, usable user with a password; ``values`` override fields."""
    number = next(_numbers)
    fields = {
        "identifier_kind": "mykad",
        "identifier": f"08051214{number:04d}",
        "email": f"pengguna{number}@example.com.my",
        "full_name": "Siti Nurhaliza binti Tarudin",
        "phone": "+60123456789",
        "category": "educator",
        "institution": "SK Taman Melati",
        "locale": "ms",
        "security_image": "cat",
        "security_phrase": "Nasi lemak kegemaran saya",
        "password_hash": HASHER.hash(password) if password else None,
        **values,
    }
    user = User(**fields)
    dbsession.add(user)
    dbsession.flush()
    return user


def display(user: User) -> str:
    """The identity number as a person types it."""
    value = user.identifier
    return f"{value[:6]}-{value[6:8]}-{value[8:]}"


def make_module(dbsession, code: str, ms: str | None = None, en: str | None = None):
    """A module; its display names default to its code."""
    from idp.models import Module

    module = Module(code=code, display_name_ms=ms or code, display_name_en=en or code)
    dbsession.add(module)
    dbsession.flush()
    return module


def make_role(dbsession, name: str, *modules):
    """A role granting ``modules``."""
    from idp.models import Role

    role = Role(name=name, display_name_ms=name, display_name_en=name)
    role.modules.extend(modules)
    dbsession.add(role)
    dbsession.flush()
    return role


def count(db, model, *where) -> int:
    """How many rows of ``model`` match ``where`` (all without it).

    ``db`` is a session (its pending rows are flushed first: autoflush) or a
    connection.
    """
    return db.scalar(select(func.count()).select_from(model).where(*where))


def events(db, name: str) -> list[AuditEvent]:
    """The audit events called ``name``, oldest first.

    ``db`` is the test's session, or an engine for what a command committed.
    """
    query = select(AuditEvent).where(AuditEvent.event == name).order_by(AuditEvent.id)
    if isinstance(db, Session):
        return list(db.scalars(query))
    with Session(db) as session:
        return list(session.scalars(query))


def make_session(dbsession, user):
    """A live IdP session of ``user`` (a random token hash)."""
    import datetime as dt
    import os

    from idp.db import utcnow
    from idp.models import IdpSession

    now = utcnow()
    row = IdpSession(
        token_hash=os.urandom(32).hex(),
        user_id=user.id,
        authn_at=now,
        expires_at=now + dt.timedelta(hours=8),
    )
    dbsession.add(row)
    dbsession.flush()
    return row


def register_sp(dbsession, **metadata):
    """The SP of ``make_sp_metadata(**metadata)`` in module emis (which must
    exist: the functional tests' ``module`` fixture), releasing four
    attributes (``RELEASED``)."""
    from idp.saml.registry import import_sp
    from tests.saml_metadata import RELEASED, make_sp_metadata

    sp = import_sp(dbsession, make_sp_metadata(**metadata), module_code="emis")
    sp.attributes_released = list(RELEASED)
    dbsession.flush()
    return sp


def commit_sp_and_user(engine) -> str:
    """Commit a module ``emis``, the test SP (``make_sp_metadata()``) in it,
    and a user whose role ``guru`` grants it; the user's number as typed.
    For tests whose requests commit (``committing_testapp``)."""
    from idp.saml.registry import import_sp
    from tests.saml_metadata import make_sp_metadata

    with Session(engine) as session, session.begin():
        module = make_module(session, "emis")
        import_sp(session, make_sp_metadata(), module_code="emis")
        user = make_user(session)
        user.roles.append(make_role(session, "guru", module))
        return display(user)
