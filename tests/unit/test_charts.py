"""Server-side bar charts: geometry that stays inside the SVG and adds up."""

from __future__ import annotations

import pytest

from idp.charts import HEIGHT, LEFT, TOP, WIDTH, nice_maximum, stacked_bars


@pytest.mark.parametrize(
    ("value", "nice"),
    [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (10, 10), (11, 20), (4999, 5000)],
)
def test_nice_maximum(value, nice):
    assert nice_maximum(value) == nice


def test_bars_stack_and_stay_inside_the_plot():
    chart = stacked_bars([[3, 0, 10], [1, 0, 10]], 3)
    assert chart.maximum == 20
    for bar in chart.bars:
        assert bar.x >= LEFT and bar.x + bar.width <= WIDTH
        assert bar.y >= TOP and bar.y + bar.height <= chart.baseline + 0.01
    last = [bar for bar in chart.bars if bar.bucket == 2]
    # Two lines of 10 fill the whole plot height between them, stacked.
    assert sum(bar.height for bar in last) == pytest.approx(chart.baseline - TOP)
    assert last[1].y + last[1].height == pytest.approx(last[0].y)
    assert not [bar for bar in chart.bars if bar.bucket == 1]  # no zero-height bars
    assert [tick.value for tick in chart.ticks] == [0, 5, 10, 15, 20]


def test_an_empty_chart_has_an_axis_and_no_bars():
    chart = stacked_bars([[0] * 24], 24)
    assert chart.bars == [] and chart.maximum == 1
    assert 1 <= len(chart.labels) <= 8
    assert chart.height == HEIGHT


@pytest.mark.parametrize("lines", [[[1, 2]], [[-1, 0, 0]]])
def test_bad_input_is_refused(lines):
    with pytest.raises(ValueError):
        stacked_bars(lines, 3)
