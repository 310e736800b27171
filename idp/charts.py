"""Bar charts drawn on the server, as SVG geometry for a template to write out.

No JavaScript and nothing from elsewhere: :func:`stacked_bars` turns counts
per bucket into rectangles, ticks and labels in the SVG's own coordinates;
``templates/admin/_chart.jinja2`` writes them with autoescape on, with a
``<title>`` and ``<desc>`` and a data table beside it for screen readers.
Colours come from CSS classes (``chart-0``...), never ``style`` attributes,
which the Content-Security-Policy would refuse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 720
HEIGHT = 240
LEFT = 48  # room for the y-axis labels
RIGHT = 8
TOP = 12
BOTTOM = 28  # room for the x-axis labels
#: At most this many x labels, evenly spread, so they never overlap.
MAX_X_LABELS = 8


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: int  # which line: its colour class and its legend entry
    value: int
    bucket: int


@dataclass(frozen=True)
class Tick:
    y: float
    value: int


@dataclass(frozen=True)
class Label:
    x: float
    bucket: int


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    ticks: list[Tick]
    labels: list[Label]
    top: int
    left: int
    baseline: float
    maximum: int


def nice_maximum(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (>= 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    raise AssertionError("unreachable: 10 * power >= value")


def stacked_bars(lines: Sequence[Sequence[int]], buckets: int) -> Chart:
    """Bars per bucket, the lines stacked in order, on a 0..nice-maximum axis."""
    if any(len(line) != buckets for line in lines):
        raise ValueError("every line needs one count per bucket")
    if any(value < 0 for line in lines for value in line):
        raise ValueError("counts are never negative")
    totals = [sum(line[i] for line in lines) for i in range(buckets)]
    maximum = nice_maximum(max(totals, default=0))
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    baseline = TOP + plot_height
    slot = plot_width / max(buckets, 1)
    bar_width = max(slot * 0.75, 1.0)
    bars = []
    for i in range(buckets):
        x = LEFT + i * slot + (slot - bar_width) / 2
        stacked = 0
        for series, line in enumerate(lines):
            value = line[i]
            if not value:
                continue
            height = plot_height * value / maximum
            y = baseline - plot_height * (stacked + value) / maximum
            bars.append(
                Bar(
                    round(x, 2),
                    round(y, 2),
                    round(bar_width, 2),
                    round(height, 2),
                    series,
                    value,
                    i,
                )
            )
            stacked += value
    ticks = [
        Tick(round(baseline - plot_height * part / 4, 2), maximum * part // 4)
        for part in range(5)
        if maximum * part % 4 == 0 or part in (0, 4)
    ]
    every = max(1, math.ceil(buckets / MAX_X_LABELS))
    labels = [
        Label(round(LEFT + i * slot + slot / 2, 2), i) for i in range(0, buckets, every)
    ]
    return Chart(WIDTH, HEIGHT, bars, ticks, labels, TOP, LEFT, baseline, maximum)
