"""Structured logs for production: one JSON object per line.

``production.ini`` formats every record with :class:`JsonFormatter`: the
time (UTC, ISO 8601, milliseconds), level, logger, thread, the message,
the request's reference when the record is logged while a request is
being served (the one its error page and its request-log line show), and
any traceback as one string. Newlines inside a message are JSON escapes,
so a value a client sent can never start a line of its own. What
:mod:`idp.logmask` masks (identity numbers, emails, phone numbers,
passwords, tokens) is masked again here, so a handler without the filter
leaks nothing either. ``development.ini`` keeps the plain one-line format
people read.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

from idp.logmask import mask


def _request_reference() -> str | None:
    try:
        from pyramid.threadlocal import get_current_request
    except ImportError:  # pragma: no cover - pyramid is a dependency
        return None
    request = get_current_request()
    if request is None:
        return None
    try:
        return request.reference
    except AttributeError:  # a request made outside the app (a script)
        return None


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
        entry: dict[str, object] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "message": mask(record.getMessage()),
        }
        reference = getattr(record, "reference", None) or _request_reference()
        if reference:
            entry["reference"] = reference
        exception = record.exc_text
        if not exception and record.exc_info:
            exception = self.formatException(record.exc_info)
        if exception:
            entry["exception"] = mask(exception)
        if record.stack_info:
            entry["stack"] = mask(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
