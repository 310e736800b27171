"""Filling the registration form as a browser does, and reading its email."""

from __future__ import annotations

import re

VALID = {
    "category": "student",
    "id_type": "mykad",
    "mykad": "080512-14-5678",
    "full_name": "Nur Aisyah binti Ahmad",
    "email": "Aisyah.Ahmad@Example.com.my",
    "email_confirm": "aisyah.ahmad@example.com.my",
    "phone": "012-345 6789",
    "institution": "SK Taman Melati",
    "security_image": "cat",
    "security_phrase": "Nasi lemak kegemaran saya",
}


def fill(form, **values):
    for name, value in {**VALID, **values}.items():
        field = form[name]
        if hasattr(field, "force_value"):
            field.force_value(value)
        else:
            field.value = value
    return form


def open_form(testapp, lang: str = "ms"):
    return testapp.get(f"/register?lang={lang}").forms["register-form"]


def temporary_password_from(message) -> str:
    body = message.get_body(("plain",)).get_content()
    return re.search(r": ([a-z0-9]{16})\s*$", body, re.MULTILINE).group(1)


def register(testapp, lang: str = "ms", **values):
    """Submit a valid registration (changed by ``values``); return the response."""
    return fill(open_form(testapp, lang), **values).submit()
