"""Sizes as people read them."""

from __future__ import annotations

import pytest

from idp.units import format_bytes, format_over


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (1023, "1023 bytes"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (5 * 1024 * 1024, "5 MiB"),
        (5 * 1024 * 1024 + 200 * 1024, "5.2 MiB"),
        (3 * 1024**3, "3 GiB"),
        (2048 * 1024**4, "2048 TiB"),
    ],
)
def test_format_bytes(size, text):
    assert format_bytes(size) == text


def test_a_size_just_over_the_limit_still_reads_as_over():
    limit = 5 * 1024 * 1024
    assert format_over(limit + 1, limit) == (
        "5 MiB (5,242,881 bytes, 1 over); the limit is 5 MiB"
    )
    assert format_over(20 * 1024 * 1024, limit) == "20 MiB; the limit is 5 MiB"
