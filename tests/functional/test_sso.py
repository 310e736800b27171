"""Single sign-on through the IdP's own pages, with hand-made requests.

The real SP libraries are driven in tests/interop/; here every request is
written by tests/saml_requests.py so each check of an incoming AuthnRequest
can be attacked alone, with a control that differs only in the attack.
"""

from __future__ import annotations

import base64

import pytest
import webtest
from lxml import etree
from sqlalchemy import func, select

from idp.models import (
    Module,
    PendingSamlRequest,
    PersistentNameId,
    Role,
    SeenRequestId,
    SessionParticipant,
)
from idp.saml.registry import import_sp
from tests.conftest import environ
from tests.factories import PASSWORD, display, make_user
from tests.saml_requests import (
    SP_ACS,
    authn_request,
    redirect_query,
)
from tests.unit.saml.test_registry import make_sp_metadata

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"


@pytest.fixture
def module(dbsession):
    module = Module(code="emis", display_name_ms="EMIS", display_name_en="EMIS")
    role = Role(name="guru", display_name_ms="Guru", display_name_en="Teacher")
    role.modules.append(module)
    dbsession.add_all([module, role])
    dbsession.flush()
    return module


@pytest.fixture
def sp(dbsession, module):
    sp = import_sp(dbsession, make_sp_metadata(), module_code="emis")
    sp.attributes_released = ["uid", "displayName", "mail", "isMemberOf"]
    dbsession.flush()
    return sp


@pytest.fixture
def user(dbsession, module):
    user = make_user(dbsession)
    user.roles.append(dbsession.scalar(select(Role).where(Role.name == "guru")))
    dbsession.flush()
    return user


def browser(app, tm, dbsession):
    return webtest.TestApp(app, extra_environ=environ(tm, dbsession))


def sign_in(testapp, user, next_url: str | None = None):
    """The three sign-in steps; returns the final redirect."""
    url = "/login?lang=en" + (f"&next={next_url}" if next_url else "")
    form = testapp.get(url).forms["login-form"]
    form["identifier"] = display(user)
    page = form.submit(status=303).follow()
    form = page.forms["image-form"]
    form["confirm"] = True
    page = form.submit(status=303).follow()
    form = page.forms["password-form"]
    form["password"] = PASSWORD
    return form.submit(status=303)


def response_of(page) -> etree._Element:
    form = page.forms["saml-post-form"]
    return etree.fromstring(base64.b64decode(form["SAMLResponse"].value))


def status_of(root) -> list[str]:
    return [c.get("Value") for c in root.iter(f"{{{SAMLP}}}StatusCode")]


def test_sp_initiated_redirect_signs_in_then_posts_a_signed_response(
    testapp, dbsession, sp, user
):
    xml = authn_request()
    page = testapp.get("/saml/sso/redirect?" + redirect_query(xml, relay_state="r1"))
    assert page.status_int == 303
    login = page.location
    assert login.startswith("https://idp.test/login?next=")
    assert dbsession.scalar(select(func.count()).select_from(PendingSamlRequest)) == 1
    next_url = login.split("next=", 1)[1]
    done = sign_in(testapp, user, next_url)
    assert "/saml/sso/continue?r=" in done.location
    page = done.follow()
    form = page.forms["saml-post-form"]
    assert form.action == SP_ACS
    assert form["RelayState"].value == "r1"
    root = response_of(page)
    assert status_of(root) == [SUCCESS]
    assert root.get("InResponseTo") == etree.fromstring(xml).get("ID")
    # The parked request is answered once.
    again = testapp.get(done.location, status=400)
    assert again.html.select_one("[data-error-code]")["data-error-code"] == (
        "saml_expired"
    )


def test_signed_in_user_gets_a_response_straight_away(testapp, dbsession, sp, user):
    sign_in(testapp, user)
    page = testapp.get(
        "/saml/sso/redirect?" + redirect_query(authn_request(), relay_state="r1")
    )
    assert page.status_int == 200
    form = page.forms["saml-post-form"]
    assert form.action == SP_ACS
    assert form["RelayState"].value == "r1"
    root = response_of(page)
    assert status_of(root) == [SUCCESS]
    assert dbsession.scalar(select(func.count()).select_from(SessionParticipant)) == 1
    assert dbsession.scalar(select(func.count()).select_from(PersistentNameId)) == 1
    assert dbsession.scalar(select(func.count()).select_from(SeenRequestId)) == 1
    csp = page.headers["Content-Security-Policy"]
    assert "form-action 'self' https://sp.example.org" in csp
    assert "'nonce-" in csp
