"""The module portal ("Modul saya"): the services a signed-in user can open.

A service is an enabled SP whose module one of the user's roles grants. Each
is shown under the SP's own mdui DisplayName in the page's language, or else
its module's name in that language, with the SP's mdui Logo if it has one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, contains_eager

from idp.models import Module, ServiceProvider, role_modules, user_roles
from idp.saml.registry import usable_metadata


@dataclass(frozen=True)
class Service:
    """One entry of the portal: an SP the user may start single sign-on to."""

    sp_id: int
    entity_id: str
    name: str
    module_name: str
    logo_url: str | None = None


def _module_name(module: Module, locale: str) -> str:
    return module.display_name_en if locale == "en" else module.display_name_ms


def reachable_services(
    dbsession: Session, user_id: uuid.UUID, locale: str
) -> list[Service]:
    """The enabled SPs whose module one of the user's roles grants.

    One SELECT, whatever the number of roles and SPs: a module granted by
    several roles still lists each of its SPs once. Disabled SPs, SPs
    without a module and SPs whose stored metadata fails today's checks
    (:func:`usable_metadata`) or has expired are left out. Names and logos
    come from the SP's metadata (parsed once per document, see
    :func:`sp_metadata`); the list is sorted by name, case-insensitively.
    """
    granted = (
        select(role_modules.c.module_id)
        .join(user_roles, user_roles.c.role_id == role_modules.c.role_id)
        .where(user_roles.c.user_id == user_id)
    )
    sps = dbsession.scalars(
        select(ServiceProvider)
        .join(ServiceProvider.module)
        .options(contains_eager(ServiceProvider.module))
        .where(
            ServiceProvider.enabled.is_(True),
            ServiceProvider.module_id.in_(granted),
        )
    )
    services = []
    for sp in sps:
        metadata = usable_metadata(sp)
        if metadata is None or metadata.expired():
            continue
        module = _module_name(sp.module, locale)
        services.append(
            Service(
                sp_id=sp.id,
                entity_id=sp.entity_id,
                name=metadata.display_names.get(locale) or module,
                module_name=module,
                logo_url=metadata.logos.get(locale),
            )
        )
    services.sort(key=lambda service: (service.name.casefold(), service.sp_id))
    return services
