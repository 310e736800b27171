"""An SSO-ready world for the SAML tests (module, role, an SP that signs its
requests or not, a user), the app built with some settings changed
(``app_with``, ``testapp_with``), and the ``idp-admin sp`` tests' scratch
``database``.

A test file may define a fixture of the same name to change it.
"""

from __future__ import annotations

import pytest
import webtest
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.db import make_engine
from idp.models import Module, Role
from tests.app import environ, make_app
from tests.cli import ok
from tests.factories import make_user, register_sp


@pytest.fixture
def module(dbsession):
    """The module "emis" and the role "guru" that grants it."""
    module = Module(code="emis", display_name_ms="EMIS", display_name_en="EMIS")
    role = Role(name="guru", display_name_ms="Guru", display_name_en="Teacher")
    role.modules.append(module)
    dbsession.add_all([module, role])
    dbsession.flush()
    return module


@pytest.fixture
def sp(dbsession, module):
    """The SP of make_sp_metadata(), in module emis, releasing four attributes."""
    return register_sp(dbsession)


@pytest.fixture
def signed_sp(dbsession, module):
    """The same SP, but its metadata sets AuthnRequestsSigned."""
    return register_sp(dbsession, signed_requests=True)


@pytest.fixture
def user(dbsession, module):
    """A user holding the role guru."""
    user = make_user(dbsession)
    user.roles.append(dbsession.scalar(select(Role).where(Role.name == "guru")))
    dbsession.flush()
    return user


@pytest.fixture(scope="module")
def app_with(settings, db_engine):
    """An app built with some settings changed; one per distinct change."""
    apps = {}

    def build(**overrides):
        key = tuple(sorted(overrides.items()))
        if key not in apps:
            apps[key] = make_app({**settings, **overrides}, db_engine)
        return apps[key]

    return build


@pytest.fixture
def testapp_with(app_with, tm, dbsession):
    """``testapp_with(overrides)``: a browser on that app, in the test's transaction."""

    def build(overrides: dict):
        return webtest.TestApp(
            app_with(**overrides), extra_environ=environ(tm, dbsession)
        )

    return build


@pytest.fixture
def service(app, tm, dbsession):
    """``service(IFoo)``: the app's service on the test's transaction
    (tests/services.py)."""
    from tests.services import services

    lookup = services(app, tm, dbsession)
    yield lookup
    lookup.close()


@pytest.fixture
def database(ini, tmp_path):
    """The scratch database at head, with one module, ``emis``."""
    ok(ini, "db", "upgrade")
    engine = make_engine({"sqlalchemy.url": f"sqlite:///{tmp_path / 'idp.sqlite'}"})
    with Session(engine) as session, session.begin():
        session.add(Module(code="emis", display_name_ms="EMIS", display_name_en="EMIS"))
    yield engine
    engine.dispose()
