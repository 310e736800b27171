"""Fixtures for the browser tests: one IdP, one service, one Chromium per module.

The IdP is the real app from development.ini under waitress on 127.0.0.1,
with its own SQLite database built by the migrations, mail delivered into
``.eml`` files by its in-process thread and the real captcha. The operator
sets it up as an operator does, with ``idp-admin``: a module, a role that
reaches it, and the service registered from its metadata.

Chromium and chromedriver come from Debian, axe-core from npm
(``scripts/setup test`` installs all three). When one is missing the tests
are skipped with the reason printed, unless ``IDP_TEST_REQUIRE_BROWSER=1``
(set by ``scripts/test``) makes that an error.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import pytest
from pyramid.paster import get_appsettings
from selenium.common.exceptions import WebDriverException

from idp.cli import main as idp_admin
from idp.settings import CAPTCHA_HOOK_ENV
from tests.e2e import harness

DEVELOPMENT_INI = harness.ROOT / "development.ini"
REQUIRE_BROWSER_ENV = "IDP_TEST_REQUIRE_BROWSER"
# Where scripts/build-help-media wants the screenshots; unset in test runs.
HELP_MEDIA_ENV = "IDP_E2E_HELP_MEDIA"
MODULE = "e2e"
ROLE = "pelajar"


# Every browser test module: marked e2e, and allowed sockets (pytest-socket
# still limits them to 127.0.0.1 and ::1).
E2E = [pytest.mark.e2e, pytest.mark.enable_socket]


@pytest.fixture(scope="session")
def browser_tools():
    reason = harness.missing_tools()
    if reason:
        if os.environ.get(REQUIRE_BROWSER_ENV) == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def write_ini(path: Path, settings: dict) -> Path:
    parser = configparser.RawConfigParser()
    parser.optionxform = str
    parser["app:main"] = {"use": "egg:idme-idp"}
    for name, value in settings.items():
        if isinstance(value, str) and name != "here" and name != "__file__":
            parser["app:main"][name] = value.replace("\n", "\n    ")
    with path.open("w") as handle:
        parser.write(handle)
    return path


def admin(ini: Path, *argv: str) -> None:
    code = idp_admin([str(ini), *argv])
    assert code == 0, f"idp-admin {' '.join(argv)} failed"


@pytest.fixture(scope="module")
def world(browser_tools, tmp_path_factory):
    """The IdP, the service and their operator's setup, running on 127.0.0.1."""
    from idp import main as idp_main

    tmp = tmp_path_factory.mktemp("e2e")
    os.environ[CAPTCHA_HOOK_ENV] = "1"
    (tmp / "captcha").mkdir()
    idp_lazy, sp_lazy = harness.LazyApp(), harness.LazyApp()
    idp_server, sp_server = harness.Server(idp_lazy), harness.Server(sp_lazy)
    base = dict(get_appsettings(str(DEVELOPMENT_INI), name="main"))
    settings = harness.idp_settings(base, idp_server.origin, tmp)
    ini = write_ini(tmp / "e2e.ini", settings)
    admin(ini, "db", "upgrade")
    idp_lazy.app = idp_main({"__file__": str(ini), "here": str(tmp)}, **settings)
    idp_server.start()
    service = harness.ServiceApp(idp_origin=idp_server.origin)
    sp_lazy.app = service
    sp_server.start()
    metadata = _get(idp_server.origin + "/saml/metadata")
    service.sp = harness.BrowserSP(sp_server.origin, metadata)
    sp_file = tmp / "sp-metadata.xml"
    sp_file.write_bytes(service.sp.metadata())
    admin(
        ini,
        "module",
        "create",
        MODULE,
        "--name-ms",
        "Modul Ujian",
        "--name-en",
        "Test Module",
    )
    admin(ini, "role", "create", ROLE, "--name-ms", "Pelajar", "--name-en", "Student")
    admin(ini, "role", "grant-module", ROLE, MODULE)
    admin(ini, "sp", "import", str(sp_file), "--module", MODULE)
    yield {
        "idp": idp_server.origin,
        "sp": sp_server.origin,
        "service": service,
        "ini": ini,
        "mailbox": harness.Mailbox(tmp / "mail"),
        "captcha_dir": tmp / "captcha",
        "tmp": tmp,
    }
    sp_server.stop()
    idp_server.stop()
    os.environ.pop(CAPTCHA_HOOK_ENV, None)


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (127.0.0.1)
        return response.read()


@pytest.fixture(scope="module")
def driver(browser_tools):
    profile = harness.new_profile()
    try:
        chrome = harness.chromium(profile)
    except WebDriverException as exc:
        harness.remove(profile)
        if os.environ.get(REQUIRE_BROWSER_ENV) == "1":
            pytest.fail(harness.chromium_failure(exc))
        pytest.skip(harness.chromium_failure(exc))
    yield chrome
    chrome.quit()
    harness.remove(profile)
