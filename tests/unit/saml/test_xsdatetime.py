"""idp.saml.xsdatetime: SAML dates read as xs:dateTime, never raising but ValueError."""

from __future__ import annotations

import datetime as dt

import pytest

from idp.saml import xsdatetime

UTC = dt.UTC


@pytest.mark.parametrize(
    ("value", "moment"),
    [
        ("2026-12-04T08:30:00Z", dt.datetime(2026, 12, 4, 8, 30, tzinfo=UTC)),
        ("2026-12-04T08:30:00", dt.datetime(2026, 12, 4, 8, 30, tzinfo=UTC)),
        ("2026-12-04T16:30:00+08:00", dt.datetime(2026, 12, 4, 8, 30, tzinfo=UTC)),
        ("2026-12-04T00:30:00-08:00", dt.datetime(2026, 12, 4, 8, 30, tzinfo=UTC)),
        (
            "2026-12-04T08:30:00.123456789Z",
            dt.datetime(2026, 12, 4, 8, 30, 0, 123456, tzinfo=UTC),
        ),
        ("2026-12-04T24:00:00Z", dt.datetime(2026, 12, 5, tzinfo=UTC)),
        ("9999-12-31T23:59:59Z", dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", dt.datetime(1, 1, 1, tzinfo=UTC)),
    ],
)
def test_xs_datetime_values_are_read_as_utc(value, moment):
    assert xsdatetime.parse(value) == moment


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
        "0000-01-01T00:00:00Z",
        "-0001-01-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-12-04T24:00:01Z",
        "2026-12-04T23:59:60Z",
        "2026-12-04T00:00:00+14:01",
        "2026-12-04T00:00:00+05:60",
        "2026-12-04",
        "20261204T000000Z",
        "2026-12-04 00:00:00Z",
        "2026-12-04T00:00:00 Z",
        "２０２６-12-04T00:00:00Z",
        "2026-12-04T00:00:00." + "9" * 100 + "Z",
        "",
        None,
    ],
)
def test_ops_09_anything_else_is_a_value_error(value):
    """OPS-09: out-of-range and malformed dates raise ValueError, never OverflowError."""
    with pytest.raises(ValueError):
        xsdatetime.parse(value)
