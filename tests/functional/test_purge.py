"""Purging keeps tables bounded: rows past retention go, rows within stay."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from idp.models import (
    AuditEvent,
    CaptchaChallenge,
    IdpSession,
    OneTimeToken,
    OutboxMessage,
    SeenRequestId,
    ThrottleCounter,
)
from idp.services.audit import AuditLog
from idp.services.purge import Purger
from tests.factories import make_user

pytestmark = pytest.mark.postgresql

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def committed(committing_testapp, db_engine):
    """A session on the real engine; every table is emptied after the test."""
    with Session(db_engine) as session:
        yield session


def purger(app, db_engine, **overrides) -> Purger:
    return Purger.from_settings({**app.registry.settings, **overrides}, db_engine)


def _session(label: str, *, created, last_seen, expires) -> IdpSession:
    return IdpSession(
        token_hash=label.ljust(64, "0"),
        data={"label": label},
        created_at=created,
        last_seen_at=last_seen,
        expires_at=expires,
    )


def _token(user, label: str, *, expires, used=None) -> OneTimeToken:
    return OneTimeToken(
        user_id=user.id,
        purpose="reset",
        token_hash=label.ljust(64, "0"),
        created_at=expires - dt.timedelta(hours=1),
        expires_at=expires,
        used_at=used,
    )


def _challenge(label: str, *, expires) -> CaptchaChallenge:
    return CaptchaChallenge(
        token_hash=label.ljust(64, "0"),
        answer_hash="0" * 64,
        purpose="login",
        binding="0" * 64,
        expires_at=expires,
    )


def _outbox(label: str, *, sent) -> OutboxMessage:
    return OutboxMessage(
        template="welcome",
        recipient=f"{label}@example.com.my",
        message="" if sent else "sealed body",
        sent_at=sent,
    )


def labels(session, model, column) -> set[str]:
    """The labels left in a table; the read ends its transaction (SQLite's lock)."""
    found = {value.rstrip("0") for value in session.scalars(select(column))}
    session.rollback()
    return found


def test_purge_removes_rows_past_retention_and_keeps_the_rest(
    app, db_engine, committed
):
    """Expired/idle sessions, old tokens, dead challenges and old sent mail go."""
    idle = dt.timedelta(seconds=app.registry.settings["idp.session_idle_seconds"])
    user = make_user(committed)
    committed.add_all(
        [
            _session(
                "expired",
                created=NOW - DAY,
                last_seen=NOW - MINUTE,
                expires=NOW - MINUTE,
            ),
            _session(
                "idle",
                created=NOW - 2 * idle,
                last_seen=NOW - idle - MINUTE,
                expires=NOW + DAY,
            ),
            _session(
                "live", created=NOW - idle, last_seen=NOW - MINUTE, expires=NOW + DAY
            ),
            _token(user, "usedlongago", expires=NOW - 8 * DAY, used=NOW - 8 * DAY),
            _token(user, "expiredlongago", expires=NOW - 8 * DAY),
            _token(user, "usedrecently", expires=NOW + DAY, used=NOW - DAY),
            _token(user, "expiredrecently", expires=NOW - DAY),
            _token(user, "live", expires=NOW + DAY),
            _challenge("expired", expires=NOW - MINUTE),
            _challenge("live", expires=NOW + MINUTE),
            # Rate-limit windows go here too (no sign-in deletes them).
            ThrottleCounter(
                key="expired".ljust(64, "0"),
                window_start=NOW - 3 * MINUTE,
                count=1,
                expires_at=NOW - MINUTE,
            ),
            ThrottleCounter(
                key="live".ljust(64, "0"),
                window_start=NOW - MINUTE,
                count=1,
                expires_at=NOW + MINUTE,
            ),
        ]
    )
    committed.add_all(
        [
            _outbox("sentlongago", sent=NOW - 31 * DAY),
            _outbox("sentrecently", sent=NOW - DAY),
            _outbox("queued", sent=None),
        ]
    )
    AuditLog(committed).record("purge.test", subject_user_id=user.id)
    committed.commit()

    counts = purger(app, db_engine).run(now=NOW)

    assert counts["idp_sessions"] == 2
    assert counts["one_time_tokens"] == 2
    assert counts["captcha_challenges"] == 1
    assert counts["throttle_counters"] == 1
    assert counts["mail_outbox"] == 1
    assert labels(committed, IdpSession, IdpSession.token_hash) == {"live"}
    assert labels(committed, OneTimeToken, OneTimeToken.token_hash) == {
        "usedrecently",
        "expiredrecently",
        "live",
    }
    assert labels(committed, CaptchaChallenge, CaptchaChallenge.token_hash) == {"live"}
    assert set(committed.scalars(select(OutboxMessage.recipient))) == {
        "sentrecently@example.com.my",
        "queued@example.com.my",
    }
    # The audit log is append-only: never purged.
    assert committed.scalar(select(func.count()).select_from(AuditEvent)) >= 1
    committed.rollback()
    # A second run finds nothing more.
    assert not any(purger(app, db_engine).run(now=NOW).values())


def test_purge_dry_run_counts_and_deletes_nothing(app, db_engine, committed):
    committed.add(_challenge("expired", expires=NOW - MINUTE))
    committed.commit()
    counts = purger(app, db_engine).run(now=NOW, dry_run=True)
    assert counts["captcha_challenges"] == 1
    assert labels(committed, CaptchaChallenge, CaptchaChallenge.token_hash) == {
        "expired"
    }


def test_purge_works_in_bounded_batches(app, db_engine, committed):
    """A backlog larger than a batch is cleared over several short transactions."""
    committed.add_all(
        [_challenge(f"old{n:03d}x", expires=NOW - MINUTE) for n in range(35)]
        + [_challenge("livex", expires=NOW + MINUTE)]
    )
    committed.commit()
    counts = purger(app, db_engine, **{"idp.purge.batch_size": 10}).run(now=NOW)
    assert counts["captcha_challenges"] == 35
    assert labels(committed, CaptchaChallenge, CaptchaChallenge.token_hash) == {"livex"}


@pytest.mark.postgresql
def test_concurrent_purges_skip_locked_rows_and_never_wait(app, db_engine, committed):
    """Two nodes purging at once share the work; a row in use is skipped, not waited on."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's")
    committed.add_all(
        [_challenge(f"old{n:03d}x", expires=NOW - MINUTE) for n in range(60)]
        + [
            _session(
                "busyx", created=NOW - DAY, last_seen=NOW - DAY, expires=NOW - MINUTE
            )
        ]
    )
    committed.commit()
    with db_engine.connect() as holder:
        holder.execute(text("SET lock_timeout = '5s'"))
        holder.execute(
            select(IdpSession.id)
            .where(IdpSession.token_hash.like("busyx%"))
            .with_for_update()
        ).all()
        workers = [
            purger(app, db_engine, **{"idp.purge.batch_size": 10}) for _ in range(3)
        ]
        start = threading.Barrier(len(workers))
        results, errors = [], []

        def run(worker):
            start.wait()
            try:
                results.append(worker.run(now=NOW))
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
        assert sum(r["captcha_challenges"] for r in results) == 60
        # The locked session was skipped by every purger, not waited on.
        assert sum(r["idp_sessions"] for r in results) == 0
        holder.rollback()
    assert purger(app, db_engine).run(now=NOW)["idp_sessions"] == 1


def test_saml_17_purge_never_deletes_a_live_replay_record_of_another_issuer(
    app, db_engine, committed
):
    """SAML-17: an expired (issuer A, ID) must not take (issuer B, ID) with it.

    The attack: a request ID seen from SP B is still in its replay window.
    Anyone can send an AuthnRequest naming SP A with the same ID and an
    old IssueInstant, so its record expires at once; the purge then must
    delete that record only, or B's request can be replayed.
    """
    committed.add_all(
        [
            SeenRequestId(
                issuer="https://a.example.my/sp",
                request_id="_x",
                expires_at=NOW - MINUTE,
            ),
            SeenRequestId(
                issuer="https://b.example.my/sp",
                request_id="_x",
                expires_at=NOW + MINUTE,
            ),
        ]
    )
    committed.commit()
    assert purger(app, db_engine).run(now=NOW)["seen_request_ids"] == 1
    left = committed.execute(
        select(SeenRequestId.issuer, SeenRequestId.request_id)
    ).all()
    committed.rollback()
    assert left == [("https://b.example.my/sp", "_x")]


def test_purge_removes_expired_replay_records_in_batches_and_keeps_live_ones(
    app, db_engine, committed
):
    """The replay records an SSO no longer purges go in the background run."""
    committed.add_all(
        [
            SeenRequestId(
                issuer=f"https://sp{n % 3}.example.my/sp",
                request_id=f"_old{n:03d}",
                expires_at=NOW - MINUTE,
            )
            for n in range(25)
        ]
        + [
            SeenRequestId(
                issuer="https://sp0.example.my/sp",
                request_id="_live",
                expires_at=NOW + MINUTE,
            )
        ]
    )
    committed.commit()
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "DELETE FROM" in statement:
            statements.append(statement)

    event.listen(db_engine, "before_cursor_execute", record)
    try:
        counts = purger(app, db_engine, **{"idp.purge.batch_size": 10}).run(now=NOW)
    finally:
        event.remove(db_engine, "before_cursor_execute", record)
    assert counts["seen_request_ids"] == 25
    # Set-based: one DELETE per batch of up to 10 rows, none per row.
    assert sum("DELETE FROM seen_request_ids" in s for s in statements) == 3
    left = list(committed.scalars(select(SeenRequestId.request_id)))
    committed.rollback()
    assert left == ["_live"]


def test_purge_removes_expired_logout_flows_with_their_legs_and_parked_requests(
    app, db_engine, committed
):
    """What logouts and parked SSOs used to purge in a user's request."""
    from saml2 import BINDING_HTTP_REDIRECT

    from idp.models import LogoutFlow, LogoutLeg, PendingSamlRequest
    from idp.saml.registry import import_sp
    from tests.saml_metadata import make_sp_metadata

    sp = import_sp(committed, make_sp_metadata())
    committed.flush()

    def flow(label: str, expires) -> LogoutFlow:
        return LogoutFlow(
            token_hash=label.ljust(64, "0"),
            deadline_at=expires,
            expires_at=expires,
            legs=[
                LogoutLeg(
                    sp_id=sp.id,
                    token_hash=("leg" + label).ljust(64, "0"),
                    name_id="n",
                    name_id_format="f",
                    session_index="s",
                )
            ],
        )

    def parked(label: str, expires) -> PendingSamlRequest:
        return PendingSamlRequest(
            token_hash=label.ljust(64, "0"),
            sp_id=sp.id,
            binding=BINDING_HTTP_REDIRECT,
            request_xml="<x/>",
            created_at=expires - MINUTE,
            expires_at=expires,
        )

    committed.add_all(
        [
            flow("expired", NOW - MINUTE),
            flow("live", NOW + MINUTE),
            parked("expired", NOW - MINUTE),
            parked("live", NOW + MINUTE),
        ]
    )
    committed.commit()
    counts = purger(app, db_engine).run(now=NOW)
    assert counts["logout_flows"] == 1
    assert counts["pending_saml_requests"] == 1
    assert labels(committed, LogoutFlow, LogoutFlow.token_hash) == {"live"}
    assert labels(committed, LogoutLeg, LogoutLeg.token_hash) == {"leglive"}
    assert labels(committed, PendingSamlRequest, PendingSamlRequest.token_hash) == {
        "live"
    }


def test_idp_admin_purge_prints_counts_per_table(tmp_path):
    """``idp-admin CONFIG purge [--dry-run]`` as an operator runs it."""
    from tests.cli import admin, scratch_ini

    config = scratch_ini(tmp_path)
    assert admin(config, "db", "upgrade").returncode == 0
    dry = admin(config, "purge", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "idp_sessions: would delete 0" in dry.stdout
    assert "mail_outbox: would delete 0" in dry.stdout
    assert "audit" not in dry.stdout
    done = admin(config, "purge")
    assert done.returncode == 0, done.stderr
    assert "captcha_challenges: deleted 0" in done.stdout
    # A database never upgraded is one line, not a traceback.
    broken = tmp_path / "broken.ini"
    broken.write_text(
        config.read_text().replace(
            str(tmp_path / "idp.sqlite"), str(tmp_path / "empty.sqlite")
        )
    )
    failed = admin(broken, "purge")
    assert failed.returncode == 1
    assert failed.stderr.startswith("idp-admin: ")
    assert "Traceback" not in failed.stderr


@pytest.mark.postgresql
def test_purged_logout_flows_leave_their_outcomes_for_the_charts(
    app, db_engine, committed
):
    """The console charts single logout over 30 days; flows go within
    minutes. The purge counts each leg per outcome and hour first (a leg
    still pending or sent never had an answer: ``timeout``), adding to what
    an earlier run counted; the dashboard adds live legs to them."""
    from idp.models import LogoutFlow, LogoutLeg, SloHourlyCount
    from idp.saml.registry import import_sp
    from idp.services.reports import Reports
    from tests.saml_metadata import make_sp_metadata

    sp = import_sp(committed, make_sp_metadata())
    committed.flush()
    hour = (NOW - 2 * MINUTE).replace(minute=0, second=0)
    changed = hour + dt.timedelta(minutes=1)

    def flow(label: str, expires, *statuses: str) -> LogoutFlow:
        return LogoutFlow(
            token_hash=label.ljust(64, "0"),
            deadline_at=expires,
            expires_at=expires,
            legs=[
                LogoutLeg(
                    sp_id=sp.id,
                    token_hash=f"leg{label}{n}".ljust(64, "0"),
                    name_id="n",
                    name_id_format="f",
                    session_index="s",
                    status=status,
                    updated_at=changed,
                )
                for n, status in enumerate(statuses)
            ],
        )

    committed.add_all(
        [
            flow("a", NOW - MINUTE, "done", "failed", "timeout", "sent", "pending"),
            flow("live", NOW + MINUTE, "done"),
        ]
    )
    committed.commit()
    assert purger(app, db_engine).run(now=NOW)["logout_flows"] == 1
    committed.add(flow("b", NOW - MINUTE, "done"))
    committed.commit()
    assert purger(app, db_engine).run(now=NOW)["logout_flows"] == 1
    counted = committed.execute(
        select(SloHourlyCount.status, SloHourlyCount.hour, SloHourlyCount.count)
    ).all()
    assert sorted(counted) == [
        ("done", hour, 2),
        ("failed", hour, 1),
        ("timeout", hour, 3),
    ]
    board = Reports(committed, clock=lambda: NOW).dashboard("30d")
    assert board.slo == {"done": 3, "failed": 1, "timeout": 3, "sent": 0, "pending": 0}
