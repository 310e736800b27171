"""Quantities as people read them: sizes in KiB and MiB, not byte counts."""

from __future__ import annotations

_UNITS = ("KiB", "MiB", "GiB", "TiB")


def format_bytes(size: int) -> str:
    """``size`` bytes in the largest binary unit that keeps it at least 1.

    Whole values print without decimals (``5 MiB``), others with one
    (``5.1 MiB``); below 1 KiB the count stays exact (``812 bytes``).
    """
    if size < 1024:
        return "1 byte" if size == 1 else f"{size} bytes"
    value = size / 1024
    index = 0
    while value >= 1024 and index < len(_UNITS) - 1:
        value /= 1024
        index += 1
    text = f"{value:.1f}".removesuffix(".0")
    return f"{text} {_UNITS[index]}"


def format_over(size: int, limit: int) -> str:
    """``size`` against ``limit``, readable and still visibly over it.

    ``5 MiB`` against a limit of ``5 MiB`` would read as no excess at all,
    so when rounding hides the difference the exact counts are added.
    """
    shown, cap = format_bytes(size), format_bytes(limit)
    if shown == cap:
        shown = f"{shown} ({size:,} bytes, {size - limit:,} over)"
    return f"{shown}; the limit is {cap}"
