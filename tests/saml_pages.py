"""Reading the IdP's SAML pages in tests: the POST form and its Response.

The fixtures of an SSO-ready world (a module, a role granting it, an SP of
that module, a user holding the role) are in tests/functional/conftest.py.
"""

from __future__ import annotations

import base64

import lxml.html
from lxml import etree

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"


def response_of(page) -> etree._Element:
    """The Response the page's auto-submitted form carries.

    The form is read with lxml: WebTest's ``forms`` parses the page twice
    with BeautifulSoup, in Python, for one hidden field.
    """
    form = lxml.html.fromstring(page.body).get_element_by_id("saml-post-form")
    return etree.fromstring(base64.b64decode(form.inputs["SAMLResponse"].value))


def status_of(root) -> list[str]:
    return [c.get("Value") for c in root.iter(f"{{{SAMLP}}}StatusCode")]
