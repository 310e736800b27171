"""Driving the IdP's pages in SAML tests: a browser, sign-in, the POST form.

The fixtures of an SSO-ready world (a module, a role granting it, an SP of
that module, a user holding the role) are in tests/functional/conftest.py.
"""

from __future__ import annotations

import base64

import webtest
from lxml import etree

from tests.app import environ
from tests.factories import PASSWORD, display

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"


def browser(app, tm, dbsession):
    """Another browser (its own cookies) on the test's transaction."""
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
    """The Response the page's auto-submitted form carries."""
    form = page.forms["saml-post-form"]
    return etree.fromstring(base64.b64decode(form["SAMLResponse"].value))


def status_of(root) -> list[str]:
    return [c.get("Value") for c in root.iter(f"{{{SAMLP}}}StatusCode")]
