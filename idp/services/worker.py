"""Long-running loops that outlive a database restart: back off, go on.

The mail deliverer (``mail deliver --loop`` and the development server's
thread), the metadata refresher (``source refresh --loop``) and the purge
they run are meant to run for months. A database restarting, a failover or
a network blip must cost them a few seconds, not their life: each failed
round is reported on one line, the loop waits a bounded, jittered,
doubling time (so nodes restarted together do not return in step), and
tries again. Only a stop request (SIGTERM or SIGINT in the CLI) ends it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from idp.dbfaults import describe_database, fault_cause, is_database_fault

# A database restart takes seconds, a failover up to a minute: the first
# retry comes quickly, and none waits longer than a minute.
FIRST_WAIT_SECONDS = 1.0
MAX_WAIT_SECONDS = 60.0


class Backoff:
    """Waits after consecutive failures: ``first``, doubling, at most ``most``.

    Each wait is jittered down by up to half ("equal jitter"): never zero,
    never above the bound, and loops that failed together spread out.
    """

    def __init__(
        self,
        first: float | None = None,
        most: float | None = None,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        first = FIRST_WAIT_SECONDS if first is None else first
        most = MAX_WAIT_SECONDS if most is None else most
        if not 0 < first <= most:
            raise ValueError("backoff needs 0 < first <= most")
        self.first = first
        self.most = most
        self.failures = 0
        self._rand = rand

    def failed(self) -> float:
        """Count a failure; the seconds to wait before the next attempt."""
        bound = min(self.first * 2 ** min(self.failures, 32), self.most)
        self.failures += 1
        return bound / 2 + bound / 2 * self._rand()

    def succeeded(self) -> None:
        self.failures = 0


def failure_line(exc: BaseException, url=None) -> str:
    """What went wrong, on one line: a database fault names the database."""
    if is_database_fault(exc):
        return f"database unavailable at {describe_database(url)}: " + fault_cause(
            exc, url
        )
    return f"{type(exc).__name__}: {fault_cause(exc)}"


class Task:
    """One job of a long-running loop, run when due.

    ``run`` does one round and returns the seconds until the next; if it
    raises, one line goes to ``report`` and the next round waits the
    backoff instead. Each task backs off on its own, so a failing purge
    never slows the delivery of mail.
    """

    def __init__(
        self,
        name: str,
        run: Callable[[], float],
        report: Callable[[str], None],
        *,
        backoff: Backoff | None = None,
        url=None,
    ) -> None:
        self.name = name
        self._run = run
        self._report = report
        self.backoff = backoff or Backoff()
        self._url = url
        self.due = time.monotonic()

    def run_if_due(self) -> None:
        if time.monotonic() < self.due:
            return
        try:
            wait = self._run()
        except Exception as exc:
            wait = self.backoff.failed()
            self._report(
                f"{self.name} failed: {failure_line(exc, self._url)}; "
                f"trying again in {wait:.1f} s"
            )
        else:
            if self.backoff.failures:
                self._report(
                    f"{self.name} works again after "
                    f"{self.backoff.failures} failed attempt(s)"
                )
            self.backoff.succeeded()
        self.due = time.monotonic() + wait


def keep_running(tasks: list[Task], stopping: threading.Event) -> None:
    """Run each task when due until ``stopping`` is set.

    A set ``stopping`` ends the wait at once; a round under way finishes
    (a message being sent, a source being applied) and the loop returns.
    """
    while not stopping.is_set():
        for task in tasks:
            if stopping.is_set():
                return
            task.run_if_due()
        now = time.monotonic()
        stopping.wait(max(0.0, min(task.due for task in tasks) - now))
