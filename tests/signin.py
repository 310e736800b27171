"""Signing in through the three real pages, as a browser does.

The sign-in is three forms: the identity number (``login-form``), the
security image confirmed (``image-form``), the password (``password-form``).
``to_image_page`` and ``to_password_page`` stop part-way for tests of one
step; ``sign_in`` goes all the way and returns the last response.
``shown`` and ``message`` read the pages; ``bcrypt_calls`` records what a
sign-in costs (OPS-06).
"""

from __future__ import annotations

from tests.factories import PASSWORD, display


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
    form = client.get(url).forms["login-form"]
    form["identifier"] = _typed(who)
    return form.submit(status=303).follow()


def to_password_page(client, who, lang: str | None = "en", **where):
    """The image confirmed; return the password page (``where``: as above)."""
    form = to_image_page(client, who, lang, **where).forms["image-form"]
    form["confirm"] = True
    return form.submit(status=303).follow()


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
    form = page.forms["password-form"]
    form["password"] = password
    if status is None:
        return form.submit(expect_errors=True)
    return form.submit(status=status)


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
