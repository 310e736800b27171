"""The "Bantuan" (Help) page: a step-by-step user manual and the helpdesk.

The helpdesk's details come from the ``idp.helpdesk.*`` settings; the name and
opening hours are shown in the page's language, or in the other language when
that one is empty. With no helpdesk settings at all the page leaves the
helpdesk section out rather than showing empty labels.
"""

from __future__ import annotations

import re

from pyramid.view import view_config

from idp import security_images
from idp.forms.register import PHRASE_MAX, PHRASE_MIN
from idp.i18n import other_locale
from idp.services.passwords import MIN_LENGTH as PASSWORD_MIN_LENGTH

_PHONE_SEPARATORS = re.compile(r"[\s\-().]")
_TEL = re.compile(r"\+?[0-9]{3,15}")


def _in_language(settings, name: str, locale: str) -> str:
    """``name.<locale>``, else ``name.<other locale>``, else ``""``."""
    return settings.get(f"{name}.{locale}") or settings.get(
        f"{name}.{other_locale(locale)}", ""
    )


def tel_uri(phone: str) -> str | None:
    """A ``tel:`` URI for a number as people write it, or None if unsure.

    ``03-8884 6000`` becomes ``tel:+60388846000``; a number that is not
    plain digits once the usual separators are gone gets no link.
    """
    value = _PHONE_SEPARATORS.sub("", phone)
    if value.startswith("00"):
        value = "+" + value[2:]
    elif value.startswith("0"):
        value = "+60" + value[1:]
    return f"tel:{value}" if _TEL.fullmatch(value) else None


def helpdesk(settings, locale: str) -> dict | None:
    """The helpdesk's details for ``locale``; None when every one is empty."""
    details = {
        "name": _in_language(settings, "idp.helpdesk.name", locale),
        "address": settings.get("idp.helpdesk.address", ""),
        "phone": settings.get("idp.helpdesk.phone", ""),
        "email": settings.get("idp.helpdesk.email", ""),
        "hours": _in_language(settings, "idp.helpdesk.hours", locale),
    }
    if not any(details.values()):
        return None
    details["tel"] = tel_uri(details["phone"]) if details["phone"] else None
    return details


@view_config(route_name="help.index", renderer="help/index.jinja2")
def index(request):
    settings = request.registry.settings
    return {
        "helpdesk": helpdesk(settings, request.locale_name),
        # The numbers the manual quotes, from where the product takes them.
        "temporary_password_hours": settings["idp.temporary_password_hours"],
        "password_min": PASSWORD_MIN_LENGTH,
        "phrase_min": PHRASE_MIN,
        "phrase_max": PHRASE_MAX,
        "image_count": len(security_images.CATALOGUE),
    }
