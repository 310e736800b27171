"""Long-running workers outlive a database outage, and stop only on a signal.

``mail deliver --loop`` (delivery, purge, source refresh) and ``source
refresh --loop`` run in this process on a scratch ini whose engine fails
its first statements, as a database restarting does; each failure is one
line, the loop backs off and goes on, and SIGTERM or SIGINT ends it with
exit status 0.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import event, text

import idp.cli.mail
import idp.db
import idp.services.worker
from idp.services.worker import Backoff, Task, keep_running
from tests.cli import admin, queue_one_message
from tests.dbfaults import refusing

FAILURES = 3
# One line per failed round, whichever task met the fault.
FAILED_LINE = re.compile(
    r"(?:mail delivery|purging|refreshing metadata sources) failed: database "
    r"unavailable at the SQLite database \S+: disk I/O error; trying again in "
    r"\d+\.\d s"
)


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(idp.services.worker, "FIRST_WAIT_SECONDS", 0.01)
    monkeypatch.setattr(idp.services.worker, "MAX_WAIT_SECONDS", 0.05)


def flaky(monkeypatch, module, pattern: str = ".", times: int = FAILURES):
    """``module.make_engine`` makes engines whose first ``times`` matching
    statements fail; returns the list of refused statements and of the
    statements let through."""
    refused: list[str] = []
    passed: list[str] = []
    real = idp.db.make_engine

    def make_engine(settings, *args, **kwargs):
        engine = real(settings, *args, **kwargs)
        event.listen(
            engine,
            "before_cursor_execute",
            refusing(engine, pattern, times=times, refused=refused),
        )

        @event.listens_for(engine, "after_cursor_execute")
        def _passed(conn, cursor, statement, *rest):
            passed.append(statement)

        return engine

    monkeypatch.setattr(module, "make_engine", make_engine)
    return refused, passed


def signal_when(condition: Callable[[], bool], signum: int) -> threading.Thread:
    """Send ``signum`` to this process once ``condition()`` holds (30 s at most)."""

    def watch() -> None:
        deadline = time.monotonic() + 30
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_mail_deliver_loop_survives_a_database_outage(
    db, tmp_path, monkeypatch, signum
):
    queue_one_message(db)
    refused, _passed = flaky(monkeypatch, idp.cli.mail)
    before = signal.getsignal(signum)
    mail = tmp_path / "mail"
    watcher = signal_when(lambda: any(mail.glob("*.eml")), signum)
    result = admin(db, "mail", "deliver", "--loop")
    watcher.join()
    assert result.returncode == 0, result.stderr
    assert len(refused) == FAILURES
    assert len(FAILED_LINE.findall(result.stderr)) == FAILURES, result.stderr
    assert "mail delivery works again after" in result.stderr
    assert "sent 1, failed 0" in result.stdout
    assert len(list(mail.glob("*.eml"))) == 1
    # The handlers the loop set are gone with it.
    assert signal.getsignal(signum) == before


def test_a_failing_purge_does_not_hold_up_mail(db, tmp_path, monkeypatch):
    """Each task backs off on its own: purging fails on and on, mail goes."""
    queue_one_message(db)
    refused, _passed = flaky(
        monkeypatch, idp.cli.mail, pattern=r"^\s*DELETE", times=10**6
    )
    mail = tmp_path / "mail"
    watcher = signal_when(
        lambda: any(mail.glob("*.eml")) and len(refused) >= 2, signal.SIGTERM
    )
    result = admin(db, "mail", "deliver", "--loop")
    watcher.join()
    assert result.returncode == 0, result.stderr
    assert "purging failed: database unavailable" in result.stderr
    assert "sent 1, failed 0" in result.stdout


def test_source_refresh_loop_survives_a_database_outage(db, monkeypatch):
    refused, passed = flaky(monkeypatch, idp.db)
    watcher = signal_when(lambda: len(refused) == FAILURES and passed, signal.SIGTERM)
    result = admin(db, "source", "refresh", "--loop")
    watcher.join()
    assert result.returncode == 0, result.stderr
    failures = re.findall(
        r"refreshing metadata sources failed: database unavailable at .*"
        r": disk I/O error; trying again in",
        result.stderr,
    )
    assert len(failures) == FAILURES, result.stderr


def test_mail_deliver_once_still_fails_on_a_database_error(db, engine, monkeypatch):
    """Control: without --loop the command reports the fault and exits 1."""
    queue_one_message(db)
    flaky(monkeypatch, idp.cli.mail)
    result = admin(db, "mail", "deliver")
    assert result.returncode == 1
    assert result.stderr.startswith("idp-admin: database error at the SQLite")
    with engine.connect() as conn:
        assert conn.scalar(
            text("SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL")
        )


def test_backoff_doubles_within_its_bound_with_jitter():
    low = Backoff(1, 8, rand=lambda: 0.0)
    assert [low.failed() for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    high = Backoff(1, 8, rand=lambda: 1.0)
    assert [high.failed() for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    high.succeeded()
    assert high.failed() == 1
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_keep_running_retries_a_failing_task_and_ends_when_told():
    stopping = threading.Event()
    lines: list[str] = []
    calls = {"flaky": 0, "steady": 0}

    def flaky_round() -> float:
        calls["flaky"] += 1
        if calls["flaky"] <= 2:
            raise TimeoutError("no answer")
        stopping.set()
        return 3600

    def steady_round() -> float:
        calls["steady"] += 1
        return 0

    keep_running(
        [
            Task("flaky", flaky_round, lines.append),
            Task("steady", steady_round, lines.append),
        ],
        stopping,
    )
    assert calls["flaky"] == 3
    assert calls["steady"] >= 2  # never held up by the other's failures
    assert lines[0].startswith("flaky failed: TimeoutError: no answer; trying again")
    assert lines[-1] == "flaky works again after 2 failed attempt(s)"


def test_the_development_servers_delivery_thread_survives_too(caplog):
    """The in-process thread (development.ini) runs the same tasks."""
    from types import SimpleNamespace

    from idp.services.delivery import DeliveryThread

    rounds = threading.Event()
    calls = []

    def run():
        calls.append(1)
        if len(calls) <= 2:
            raise TimeoutError("SQLite writer queue: no turn within 30 s")
        rounds.set()

    worker = SimpleNamespace(run=run, engine=SimpleNamespace(url=None))
    thread = DeliveryThread(worker, interval=0.01)  # type: ignore[arg-type]
    thread.start()
    try:
        assert rounds.wait(10)
    finally:
        thread.stop()
        thread.join(10)
    assert not thread.is_alive()
    failures = [r for r in caplog.records if "mail delivery failed" in r.getMessage()]
    assert len(failures) == 2
