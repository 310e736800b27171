"""Production's structured logs (idp/logjson.py): one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys

from pyramid.threadlocal import manager

from idp.logjson import JsonFormatter
from tests.functional.test_requestlog import shipped_formatter


def record(message, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord(
        "idp.views", logging.WARNING, __file__, 1, message, args, exc_info
    )


def test_a_record_is_one_line_of_json_with_personal_data_masked():
    """DATA-08: a client's value with a newline cannot start a line of its
    own, and the number and email in it are masked even without the filter."""
    line = JsonFormatter().format(
        record(
            'lookup for %s\n{"level":"CRITICAL"} from %s',
            "800101-14-5678",
            "siti@example.com.my",
        )
    )
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "idp.views"
    assert entry["time"].endswith("Z")
    assert "800101-14-5678" not in line and "XXXXXX-XX-5678" in entry["message"]
    assert "siti@example.com.my" not in line
    assert "reference" not in entry  # not logged inside a request


def test_a_traceback_is_one_masked_string():
    try:
        raise ValueError("password=hunter2-secret for 800101145678")
    except ValueError:
        line = JsonFormatter().format(record("failed", exc_info=sys.exc_info()))
    entry = json.loads(line)
    assert "Traceback" in entry["exception"] and "ValueError" in entry["exception"]
    assert "hunter2-secret" not in line and "800101145678" not in line


def test_a_record_logged_during_a_request_carries_its_reference():
    class Request:
        reference = "KXTBQMRZDHWP"

    manager.push({"request": Request(), "registry": None})
    try:
        entry = json.loads(JsonFormatter().format(record("refused")))
    finally:
        manager.pop()
    assert entry["reference"] == "KXTBQMRZDHWP"


def test_production_logs_json_and_development_plain_lines():
    assert isinstance(shipped_formatter("production.ini"), JsonFormatter)
    assert not isinstance(shipped_formatter("development.ini"), JsonFormatter)
