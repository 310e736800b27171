"""Timing comparisons for the "costs the same" tests (AUTH-06, AUTH-28).

The question each test asks is whether two paths do the same work, so that
an attacker timing them learns nothing. Two things move a measurement: the
code (a path that does more work is slower in every trial) and the machine
(a parallel test worker or another job taking the CPU for a while, which
comes and goes). Samples are taken in back-to-back pairs whose order
alternates, so load that lasts longer than a pair cancels out of the
difference; a burst that does not cancel moves one trial, and the trial is
taken again, up to :data:`TRIALS` times. A difference in the code fails
every trial; a burst does not outlast three.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

TRIALS = 3


def timed_ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def paired_samples(samples: int, *actions: Callable[[], object]) -> list[list[float]]:
    """Each action's times over ``samples`` rounds whose order alternates."""
    times: list[list[float]] = [[] for _ in actions]
    rounds = list(zip(times, actions, strict=True))
    for index in range(samples):
        for kept, action in rounds if index % 2 == 0 else reversed(rounds):
            kept.append(timed_ms(action))
    return times


def median_gap(first: list[float], second: list[float]) -> float:
    """The median of the paired differences, ``first - second``."""
    return statistics.median(a - b for a, b in zip(first, second, strict=True))


def same_cost(trial: Callable[[], tuple[float, float, str]]) -> int:
    """How many trials it took for one gap to fall within its bound; fails if
    none did.

    ``trial`` measures once and returns (gap, bound, what to print).
    """
    seen = []
    for count in range(1, TRIALS + 1):
        gap, bound, said = trial()
        print(said)
        seen.append(said)
        if abs(gap) < bound:
            return count
    raise AssertionError("every trial differed: " + "; ".join(seen))
