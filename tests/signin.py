"""Signing in through the three real pages, as a browser does.

The sign-in is three forms: the identity number (``login-form``), the
security image confirmed (``image-form``), the password (``password-form``).
``to_image_page`` and ``to_password_page`` stop part-way for tests of one
step; ``sign_in`` goes all the way and returns the last response.
``shown`` and ``message`` read the pages; ``bcrypt_calls`` records what a
sign-in costs (OPS-06).

The helpers fill and send the three forms with :func:`submit`, which reads
a page's form with lxml and sends what a browser sends; WebTest's
``response.forms`` would parse each page twice with BeautifulSoup in
Python, several times the cost of the request (the sign-in page lists
every passport country). Tests that look at a form use ``forms`` as ever.
"""

from __future__ import annotations

import lxml.html

from tests.factories import PASSWORD, display


def fill(form, values: dict):
    """``form`` (an lxml form) with ``values`` set by field name, as a person
    fills it: True/False ticks a checkbox; a name the form lacks is an error."""
    for name, value in values.items():
        field = form.inputs[name]
        if isinstance(value, bool):
            field.checked = value
        else:
            field.value = value
    return form


def submit(page, form_id: str, values: dict, **kwargs):
    """Fill the form ``form_id`` of ``page`` and send it as a browser does.

    ``values`` sets fields by name (True/False ticks a checkbox); a name the
    form lacks is an error. What is sent is the form's successful controls
    (lxml's ``form_values``: hidden fields, the selected option, ticked
    boxes; no buttons), to its action resolved against the page's URL, by
    its method. ``kwargs`` go to WebTest (``status``, ``expect_errors``).
    """
    form = fill(lxml.html.fromstring(page.body).get_element_by_id(form_id), values)
    return page.goto(
        form.get("action") or page.request.url,
        method=form.get("method", "get"),
        params=form.form_values(),
        **kwargs,
    )


def _typed(who) -> str:
    """The identity number as typed: a string as given, or a user's, dashed."""
    return who if isinstance(who, str) else display(who)


def to_image_page(
    client,
    who,
    lang: str | None = "en",
    *,
    next_url: str | None = None,
    start: str = "/login",
):
    """Submit the identity number; return the security image page.

    ``who`` is a user or the number as a person types it. ``lang`` (None:
    none asked for) and ``next_url`` go on the query of ``start``, the
    sign-in page or a URL the IdP redirected to. ``next_url`` is sent as
    given, not encoded again: the attack tests choose its every byte.
    """
    query = []
    if lang is not None:
        query.append(f"lang={lang}")
    if next_url is not None:
        query.append(f"next={next_url}")
    url = start
    if query:
        url += ("&" if "?" in start else "?") + "&".join(query)
    page = client.get(url)
    return submit(page, "login-form", {"identifier": _typed(who)}, status=303).follow()


def to_password_page(client, who, lang: str | None = "en", **where):
    """The image confirmed; return the password page (``where``: as above)."""
    page = to_image_page(client, who, lang, **where)
    return submit(page, "image-form", {"confirm": True}, status=303).follow()


def sign_in(
    client,
    who,
    password: str = PASSWORD,
    *,
    lang: str | None = "en",
    next_url: str | None = None,
    start: str = "/login",
    status: int | str | None = 303,
):
    """Sign in through the three pages; return the password form's response.

    It must have ``status`` (303 by default: signed in and sent on); None
    takes whatever the IdP answers, for refusals, limits and lockouts.
    """
    page = to_password_page(client, who, lang, next_url=next_url, start=start)
    fields = {"password": password}
    if status is None:
        return submit(page, "password-form", fields, expect_errors=True)
    return submit(page, "password-form", fields, status=status)


def first_sign_in(client, who, temporary: str, new_password: str, image="umbrella"):
    """A new user's first sign-in: the emailed temporary password, then
    their own password and security image chosen on the page it leads to.
    Returns the answer to that choice (a 303 onwards)."""
    page = sign_in(client, who, temporary).follow()
    return submit(
        page,
        "new-password-form",
        {
            "password": new_password,
            "password_confirm": new_password,
            "security_image": image,
        },
        status=303,
    )


def shown(page) -> tuple[str, str]:
    """The security image (its name) and phrase the image page shows."""
    image = page.html.select_one("#security-image img")["src"]
    phrase = page.html.select_one("#security-phrase").get_text()
    return image.rsplit("/", 1)[-1].removesuffix(".svg"), phrase


def message(page) -> str:
    """The sign-in page's message block, as one line ("" when none)."""
    block = page.html.select_one("#login-message")
    return block.get_text(" ", strip=True) if block else ""


def bcrypt_calls(monkeypatch) -> list[str]:
    """The bcrypt calls made from now on (OPS-06), by name, in order."""
    from idp.services import passwords

    calls = []
    for name in ("checkpw", "hashpw"):
        original = getattr(passwords.bcrypt, name)
        monkeypatch.setattr(
            passwords.bcrypt,
            name,
            lambda *a, _o=original, _n=name: calls.append(_n) or _o(*a),
        )
    return calls
