"""The console's registry, audit, outbox and dashboard pages in Chromium, by axe.

An administrator holding the registry and auditor roles (two-step on)
walks every page of this part of the console, in Malay on a desktop and in
English at a phone's width, reaching the menu by keyboard; axe-core checks
each page, the dashboard's SVG charts and data tables included, for any
serious or critical WCAG 2.1 A/AA violation.

With ``IDP_E2E_CONSOLE_SHOTS`` set to a folder (``docs/helpdesk``), the
desktop run saves the screenshots of the README's "Running the helpdesk".
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy.orm import Session

from idp.cli.common import load_settings
from idp.db import make_engine
from idp.services.actor import Actor
from idp.services.admin import AdminRoles
from idp.services.audit import AuditLog
from idp.services.mail import Composer, Outbox, OutboxCodec
from tests.e2e import harness, media
from tests.e2e.conftest import E2E, MODULE, ROLE
from tests.e2e.test_helpdesk import SHOTS_ENV, sign_in_with_code
from tests.factories import make_user
from tests.two_step import Clock, enable

pytestmark = E2E

VIEWS = [("ms", 1280, 800), ("en", 360, 740)]


@pytest.fixture
def officer(world):
    settings = load_settings(str(world["ini"]))
    engine = make_engine(settings)
    try:
        with Session(engine, expire_on_commit=False) as session:
            user = make_user(session, full_name="Pegawai Pendaftaran")
            outbox = Outbox(
                session, Composer(settings), OutboxCodec(settings["idp.hmac_key"])
            )
            grants = AdminRoles(session, audit=AuditLog(session), outbox=outbox)
            for role in ("registry", "auditor"):
                grants.grant(user, role, actor=Actor.command_line())
            user.secret, _codes = enable(
                settings, session, user, Clock(dt.datetime.now(dt.UTC))
            )
            session.commit()
    finally:
        engine.dispose()
    return user


@pytest.fixture
def page(world, driver, request):
    lang, width, height = request.param
    driver.delete_all_cookies()
    wanted = os.environ.get(SHOTS_ENV)
    saver = media.Shots(Path(wanted), lang) if wanted and width > 1000 else None
    browser = harness.Browser(driver, world["captcha_dir"], saver)
    browser.size(width, height)
    browser.lang = lang
    return browser


@pytest.mark.parametrize("page", VIEWS, ids=["ms-desktop", "en-phone"], indirect=True)
def test_registry_audit_outbox_and_dashboard_pages_pass_axe(world, page, officer):
    idp = world["idp"]
    sign_in_with_code(page, world, officer)
    page.get(f"{idp}/admin?lang={page.lang}")
    page.follow_link("/admin/dashboard")
    assert page.has("svg#sign-in-chart title"), page.text()
    page.check("console: dashboard, 24 hours")
    page.shot("registry-dashboard")
    entity = quote(world["service"].sp.entity_id, safe="")
    for path, state in (
        ("/admin/dashboard?window=30d", "dashboard, 30 days"),
        ("/admin/roles", "roles"),
        (f"/admin/roles/{ROLE}", "a role"),
        ("/admin/modules", "modules"),
        (f"/admin/modules/{MODULE}", "a module"),
        ("/admin/sps", "service providers"),
        (f"/admin/sp?e={entity}", "a service provider"),
        (f"/admin/sp/remove?e={entity}", "removing a service provider"),
        ("/admin/sps/upload", "uploading metadata"),
        ("/admin/sources", "sources and quarantine"),
        ("/admin/audit", "audit log"),
        ("/admin/audit?event=nope%21", "audit log, a bad filter"),
        ("/admin/audit/verify", "audit log check"),
        ("/admin/outbox?state=pending", "outbox"),
    ):
        sep = "&" if "?" in path else "?"
        page.get(f"{idp}{path}{sep}lang={page.lang}")
        page.check(f"console: {state}")
        if path.startswith("/admin/sp?"):
            page.shot("registry-sp")
