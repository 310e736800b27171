"""Fixtures for the interop tests: a module, people with roles, registered SPs.

Every SP is registered the way an operator registers one, from the metadata
the SP library publishes, through ``import_sp``; the IdP's own metadata comes
from the running app. Nothing of the IdP is mocked.
"""

from __future__ import annotations

import pytest

from idp.models import Module, Role, ServiceProvider
from idp.saml.registry import import_sp
from tests.factories import make_role, make_user
from tests.interop.browser import Browser

MODULE_CODE = "m1"


@pytest.fixture
def idp_metadata(testapp) -> bytes:
    return testapp.get("/saml/metadata").body


@pytest.fixture
def module(dbsession) -> Module:
    module = Module(
        code=MODULE_CODE, display_name_ms="Modul Satu", display_name_en="Module One"
    )
    dbsession.add(module)
    dbsession.flush()
    return module


@pytest.fixture
def role(dbsession, module) -> Role:
    return make_role(dbsession, "guru", module)


@pytest.fixture
def user(dbsession, role):
    """A user whose role grants the SPs' module."""
    user = make_user(dbsession)
    user.roles.append(role)
    dbsession.flush()
    return user


@pytest.fixture
def browser(testapp) -> Browser:
    return Browser(testapp)


@pytest.fixture
def register(dbsession, module, idp_metadata):
    """``register(sp_class, name, attributes=(), **options) -> (sp, row)``.

    Makes an SP at ``https://<name>.test/sp``, imports its metadata for the
    module and sets the attributes the IdP releases to it. The SP publishes
    no encryption key unless ``encryption=True``: encryption has tests of its
    own, and leaving it out elsewhere keeps one fault to one failing test.
    """

    def register(
        sp_class, name: str, attributes=(), *, encryption: bool = False, **options
    ) -> tuple[object, ServiceProvider]:
        sp = sp_class(
            f"https://{name}.test/sp", idp_metadata, encryption=encryption, **options
        )
        row = import_sp(dbsession, sp.metadata(), module_code=module.code)
        row.attributes_released = list(attributes)
        dbsession.flush()
        return sp, row

    return register
