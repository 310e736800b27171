"""The "Forgot password" flow as a browser walks it, the link read from the email.

``reset`` does the whole flow; the steps are ``ask`` (the request form),
``link_for`` (ask, then the newest link mailed), ``open_link``, ``verify``
(email and identity number) and ``choose`` (the new password).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from tests.factories import NEW_PASSWORD

LINK = re.compile(r"https://\S+/password/reset/[A-Za-z0-9_-]+")


def ask(testapp, email: str, lang: str = "en"):
    """Fill and submit the "Forgot password" form; return the response."""
    form = testapp.get(f"/password/forgot?lang={lang}").forms["reset-request-form"]
    form["email"] = email
    return form.submit(expect_errors=True)


def reset_links(mailbox, email: str) -> list[str]:
    """The reset links mailed to ``email``, oldest first."""
    bodies = [message.get_body(("plain",)).get_content() for message in mailbox(email)]
    return [found[0] for found in map(LINK.search, bodies) if found]


def link_for(testapp, mailbox, email: str) -> str:
    """Ask for a link and return the newest one the mailbox got."""
    assert ask(testapp, email).status_int == 303
    return reset_links(mailbox, email)[-1]


def open_link(testapp, link: str, **kw):
    return testapp.get(urlsplit(link).path, **kw)


def verify(testapp, email: str, number: str, country: str | None = None):
    form = testapp.get("/password/reset").forms["reset-verify-form"]
    form["email"] = email
    form["identifier"] = number
    if country:
        form["country"].force_value(country)
    return form.submit(expect_errors=True)


def choose(testapp, password: str = NEW_PASSWORD, again: str | None = None):
    form = testapp.get("/password/reset/new").forms["reset-new-form"]
    form["password"] = password
    form["password_confirm"] = password if again is None else again
    return form.submit(expect_errors=True)


def reset(testapp, mailbox, user_values: dict, password: str = NEW_PASSWORD):
    """The whole flow for one user; return the last response."""
    link = link_for(testapp, mailbox, user_values["email"])
    assert open_link(testapp, link).status_int == 303
    assert (
        verify(testapp, user_values["email"], user_values["identifier"]).status_int
        == 303
    )
    return choose(testapp, password)
