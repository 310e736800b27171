"""One log line per request, with nothing in it that may carry a secret.

Issue 12 item 16: ``GET /login 200 7.3ms ref=...`` at INFO in development;
never the query string; a route's pattern where the path holds a token
(WEB-13); the reference an error page shows. And the shipped log format
prints level names whole.
"""

from __future__ import annotations

import configparser
import logging
import re
from pathlib import Path

import pytest

from idp.requestlog import REFERENCE_PATTERN

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(
    r"^(?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}) \d+\.\dms "
    rf"ref=(?P<ref>{REFERENCE_PATTERN})$"
)


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger="idp.requests")

    def read() -> list[re.Match]:
        found = [
            LINE.match(record.getMessage())
            for record in caplog.records
            if record.name == "idp.requests"
        ]
        caplog.clear()
        assert all(found), found
        return found

    return read


@pytest.mark.parametrize("lang", ["ms", "en"])
def test_each_request_logs_one_line_without_its_query(testapp, lines, lang):
    page = testapp.get(f"/login?lang={lang}&token=s3cr3t-query-value")
    assert page.status_int == 200
    (line,) = lines()
    assert (line["method"], line["path"], line["status"]) == ("GET", "/login", "200")
    assert "s3cr3t" not in line.string
    testapp.get("/help", params={"lang": lang})
    (line,) = lines()
    assert line["path"] == "/help"


def test_a_token_in_the_path_is_logged_as_the_route_pattern(testapp, lines):
    """WEB-13: a reset link's token never reaches the log."""
    testapp.get("/password/reset/Zm9yZ2V0LW1lLW5vdC10b2tlbi12YWx1ZQ", status=400)
    (line,) = lines()
    assert line["path"] == "/password/reset/{token}"
    assert "Zm9yZ2V0" not in line.string
    testapp.get("/captcha/not-a-real-challenge-token.png", status="*")
    (line,) = lines()
    assert line["path"] == "/captcha/{token}.png"


@pytest.mark.parametrize("lang", ["ms", "en"])
def test_the_error_page_and_the_log_line_share_the_reference(testapp, lines, lang):
    page = testapp.get(f"/no/such/page?lang={lang}", status=404)
    (line,) = lines()
    assert line["status"] == "404"
    assert line["ref"] in page.text
    # A path no route matched is printed, its control characters escaped.
    testapp.get("/no/such%0Apage", status=404)
    (line,) = lines()
    assert line["path"] == "/no/such\\x0apage"


def shipped_formatter(name: str) -> logging.Formatter:
    """The formatter an ini's console handler uses, built as fileConfig would."""
    import importlib

    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / name)
    section = ini["formatter_" + ini["handler_console"]["formatter"]]
    if "class" in section:
        module, _, cls = section["class"].rpartition(".")
        return getattr(importlib.import_module(module), cls)()
    return logging.Formatter(section["format"])


@pytest.mark.parametrize("name", ["development.ini", "production.ini"])
def test_log_level_names_are_printed_whole(name):
    formatter = shipped_formatter(name)
    for level in (logging.WARNING, logging.CRITICAL, logging.INFO):
        record = logging.LogRecord("idp", level, __file__, 1, "message", None, None)
        line = formatter.format(record)
        level_name = logging.getLevelName(level)
        assert f" {level_name} " in line or f'"level":"{level_name}"' in line


def test_development_shows_request_lines_at_info():
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "development.ini")
    (section,) = [
        ini[name]
        for name in ini.sections()
        if name.startswith("logger_") and ini[name].get("qualname") == "idp.requests"
    ]
    assert section["level"] == "INFO"
    assert "idp_requests" in ini["loggers"]["keys"]
