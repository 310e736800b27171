"""xs:dateTime values from SAML messages and metadata, read strictly (OPS-09).

``datetime.fromisoformat`` reads far more than XML Schema allows (bare
dates, the basic ``20261204T000000`` form, offsets of any size), and a value
it does read can still lie outside what a ``datetime`` holds once moved to
UTC: ``0001-01-01T00:00:00+14:00`` is before year 1, and converting it
raises ``OverflowError``, which no caller expects. Every SAML date the IdP
reads (IssueInstant, metadata ``validUntil``) goes through :func:`parse`,
which raises only ``ValueError``.
"""

from __future__ import annotations

import datetime as dt
import re

# XML Schema 1.1 part 2, 3.3.8: no sign or years beyond four digits here,
# since a datetime holds years 1..9999 only. ASCII digits only (re's \d
# would accept other scripts' digits). Offsets are at most 14:00.
_XS_DATETIME = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]+))?"
    r"(?P<zone>Z|(?P<sign>[+-])(?P<zone_hour>[0-9]{2}):(?P<zone_minute>[0-9]{2}))?"
)
MAX_LENGTH = 64
MAX_OFFSET = dt.timedelta(hours=14)


def parse(value: str | None) -> dt.datetime:
    """The UTC moment ``value`` names; a value without a zone is UTC.

    Raises ``ValueError`` for anything that is not an xs:dateTime or whose
    UTC moment falls outside years 1..9999. ``24:00:00`` (the end of a day)
    is the next day's midnight, as the schema says.
    """
    if not value:
        raise ValueError("missing")
    if len(value) > MAX_LENGTH:
        raise ValueError("too long for a date and time")
    match = _XS_DATETIME.fullmatch(value)
    if match is None:
        raise ValueError("not an xs:dateTime")
    part = {
        name: int(match[name])
        for name in ("year", "month", "day", "hour", "minute", "second")
    }
    fraction = match["fraction"] or ""
    end_of_day = part["hour"] == 24
    if end_of_day and (part["minute"] or part["second"] or fraction.strip("0")):
        raise ValueError("24:00:00 is the only time in hour 24")
    offset = dt.timedelta()
    if match["sign"]:
        zone_hour, zone_minute = int(match["zone_hour"]), int(match["zone_minute"])
        if zone_minute > 59:
            raise ValueError("offset minutes out of range")
        offset = dt.timedelta(hours=zone_hour, minutes=zone_minute)
        if offset > MAX_OFFSET:
            raise ValueError("offset beyond 14:00")
        if match["sign"] == "-":
            offset = -offset
    try:
        local = dt.datetime(
            part["year"],
            part["month"],
            part["day"],
            0 if end_of_day else part["hour"],
            part["minute"],
            part["second"],
            # Beyond microseconds is truncated: no clock check needs it.
            int(fraction[:6].ljust(6, "0")),
        )
        moment = local + dt.timedelta(days=end_of_day) - offset
    except (ValueError, OverflowError):
        raise ValueError("outside the dates this service can hold") from None
    return moment.replace(tzinfo=dt.UTC)
