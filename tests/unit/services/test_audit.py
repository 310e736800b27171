"""The audit log service: the hash chain it writes and how ``verify`` reads it.

The database's own refusals (triggers), concurrency and the CLI are in
tests/functional/test_audit.py.
"""

from __future__ import annotations

import datetime as dt
import gc
import tracemalloc
import uuid

import pytest
from pyramid.config import Configurator
from pyramid.scripting import prepare
from sqlalchemy import insert, select

from idp.models import AuditEvent
from idp.services.audit import (
    GENESIS_HASH,
    AuditLog,
    VerifyResult,
    canonical_json,
    chain_hash,
    verify,
)
from idp.services.interfaces import IAuditLog
from tests.factories import count

pytestmark = pytest.mark.postgresql

BASE = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
ALICE = uuid.UUID("6f1d2c3b-4a59-4e6f-8a7b-9c0d1e2f3a4b")
ADMIN = uuid.UUID("0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d")


class TickingClock:
    """Each call is one second after the last, starting at BASE."""

    def __init__(self):
        self.calls = 0

    def __call__(self) -> dt.datetime:
        self.calls += 1
        return BASE + dt.timedelta(seconds=self.calls - 1)


@pytest.fixture
def audit(dbsession) -> AuditLog:
    assert count(dbsession, AuditEvent) == 0, "the audit log should start empty"
    return AuditLog(dbsession, clock=TickingClock())


def chain(n: int, prev_hash: str = GENESIS_HASH) -> list[dict]:
    """``n`` well-chained rows as dicts for a bulk INSERT."""
    rows = []
    for i in range(n):
        fields = {
            "occurred_at": BASE + dt.timedelta(seconds=i),
            "event": "test.event",
            "actor_user_id": None,
            "subject_user_id": ALICE,
            "client_address": "192.0.2.10",
            "detail": {"n": i},
        }
        row_hash = chain_hash(prev_hash, **fields)
        rows.append({**fields, "prev_hash": prev_hash, "hash": row_hash})
        prev_hash = row_hash
    return rows


def insert_rows(dbsession, rows: list[dict]) -> list[int]:
    """INSERT (which the log allows) ``rows`` after any already there, in
    order; return their ids."""
    dbsession.execute(insert(AuditEvent), rows)
    stored = dbsession.execute(
        select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id)
    ).all()[-len(rows) :]
    assert [row.hash for row in stored] == [row["hash"] for row in rows]
    return [row.id for row in stored]


# record


def test_first_event_starts_from_64_zeros(audit):
    row = audit.record(
        "login.success",
        subject_user_id=ALICE,
        actor_user_id=ALICE,
        client_address="192.0.2.10",
        detail={"method": "password"},
    )

    assert row.id is not None
    assert row.prev_hash == GENESIS_HASH == "0" * 64
    assert row.occurred_at == BASE
    assert row.hash == chain_hash(
        GENESIS_HASH,
        occurred_at=BASE,
        event="login.success",
        actor_user_id=ALICE,
        subject_user_id=ALICE,
        client_address="192.0.2.10",
        detail={"method": "password"},
    )


def test_each_event_carries_the_hash_of_the_one_before(audit):
    rows = [audit.record(f"test.step{i}", detail={"i": i}) for i in range(3)]

    assert [row.prev_hash for row in rows] == [GENESIS_HASH, rows[0].hash, rows[1].hash]
    assert len({row.hash for row in rows}) == 3
    assert [row.occurred_at for row in rows] == [
        BASE + dt.timedelta(seconds=i) for i in range(3)
    ]


def test_record_writes_in_the_callers_transaction(audit, dbsession):
    savepoint = dbsession.begin_nested()
    audit.record("test.rolled_back")
    savepoint.rollback()

    assert count(dbsession, AuditEvent) == 0
    assert audit.record("test.kept").prev_hash == GENESIS_HASH


def test_detail_is_stored_as_it_was_hashed(audit, dbsession):
    row = audit.record(
        "test.detail", detail={"roles": ("admin", "staff"), "name": "Siti Nurhaliza"}
    )
    dbsession.expire_all()

    assert dbsession.get(AuditEvent, row.id).detail == {
        "name": "Siti Nurhaliza",
        "roles": ["admin", "staff"],
    }
    assert verify(dbsession) == VerifyResult(ok=True, checked=1, first_bad_id=None)


def test_user_ids_given_as_strings_are_stored_as_uuids(audit, dbsession):
    row = audit.record("test.ids", subject_user_id=str(ALICE), actor_user_id=str(ADMIN))
    dbsession.expire_all()

    stored = dbsession.get(AuditEvent, row.id)
    assert (stored.subject_user_id, stored.actor_user_id) == (ALICE, ADMIN)
    assert verify(dbsession).ok


@pytest.mark.parametrize(
    ("event", "kwargs"),
    [
        ("", {}),
        ("x" * 65, {}),
        ("test.bad", {"client_address": "x" * 65}),
        ("test.bad", {"detail": {"when": BASE}}),
        ("test.bad", {"detail": {"score": float("nan")}}),
        ("test.bad", {"detail": {1: "a", "b": 2}}),
        ("test.bad", {"detail": ["not", "a", "dict"]}),
        ("test.bad", {"subject_user_id": "not-a-uuid"}),
    ],
    ids=[
        "empty event",
        "long event",
        "long address",
        "datetime in detail",
        "NaN in detail",
        "mixed keys",
        "list detail",
        "bad user id",
    ],
)
def test_bad_input_is_refused_and_writes_nothing(audit, dbsession, event, kwargs):
    with pytest.raises(ValueError):
        audit.record(event, **kwargs)
    assert count(dbsession, AuditEvent) == 0


def test_hash_covers_every_field_and_the_previous_hash():
    fields = {
        "occurred_at": BASE,
        "event": "login.success",
        "actor_user_id": None,
        "subject_user_id": ALICE,
        "client_address": "192.0.2.10",
        "detail": {"method": "password"},
    }
    changed = {
        "occurred_at": BASE + dt.timedelta(microseconds=1),
        "event": "login.failure",
        "actor_user_id": ADMIN,
        "subject_user_id": ADMIN,
        "client_address": "192.0.2.11",
        "detail": {"method": "temporary"},
    }
    original = chain_hash(GENESIS_HASH, **fields)

    assert original == chain_hash(GENESIS_HASH, **fields)
    assert original != chain_hash("1" * 64, **fields)
    for name, value in changed.items():
        assert original != chain_hash(GENESIS_HASH, **{**fields, name: value}), name


def test_hash_does_not_depend_on_the_time_zone_given():
    fields = {
        "event": "login.success",
        "actor_user_id": None,
        "subject_user_id": None,
        "client_address": None,
        "detail": {},
    }
    kuala_lumpur = dt.timezone(dt.timedelta(hours=8))

    assert chain_hash(GENESIS_HASH, occurred_at=BASE, **fields) == chain_hash(
        GENESIS_HASH, occurred_at=BASE.astimezone(kuala_lumpur), **fields
    )


def test_canonical_json_sorts_keys_and_drops_spaces():
    assert (
        canonical_json({"b": 1, "a": [1, {"d": 2, "c": "é"}]})
        == '{"a":[1,{"c":"é","d":2}],"b":1}'
    )


# verify


def test_verify_an_empty_log(dbsession):
    assert count(dbsession, AuditEvent) == 0
    assert verify(dbsession) == VerifyResult(ok=True, checked=0, first_bad_id=None)


def test_verify_an_intact_chain_counts_every_event(audit, dbsession):
    audit.record("login.success", subject_user_id=ALICE, client_address="192.0.2.10")
    audit.record("account.locked", subject_user_id=ALICE, actor_user_id=ADMIN)
    audit.record("test.bare")
    dbsession.expire_all()

    assert verify(dbsession) == VerifyResult(ok=True, checked=3, first_bad_id=None)
    assert verify(dbsession.connection()).ok


def test_verify_reports_a_row_whose_own_hash_is_wrong(dbsession):
    rows = chain(5)
    rows[2]["hash"] = "f" * 64
    for later in (3, 4):  # chained on from the bad hash: only row 3 is wrong
        rows[later]["prev_hash"] = rows[later - 1]["hash"]
        rows[later]["hash"] = chain_hash(
            rows[later]["prev_hash"],
            **{k: v for k, v in rows[later].items() if k not in ("prev_hash", "hash")},
        )
    row_ids = insert_rows(dbsession, rows)

    assert verify(dbsession) == VerifyResult(
        ok=False, checked=3, first_bad_id=row_ids[2]
    )


def test_verify_reports_a_gap_at_the_row_after_it(dbsession):
    rows = chain(4)
    row_ids = insert_rows(dbsession, rows[:2] + rows[3:])

    assert verify(dbsession) == VerifyResult(
        ok=False, checked=3, first_bad_id=row_ids[2]
    )


def test_verify_reports_a_chain_that_does_not_start_at_zeros(dbsession):
    rows = chain(3, prev_hash="1" * 64)
    row_ids = insert_rows(dbsession, rows)

    assert verify(dbsession) == VerifyResult(
        ok=False, checked=1, first_bad_id=row_ids[0]
    )


def traced_peak(dbsession) -> tuple[VerifyResult, int]:
    gc.collect()
    tracemalloc.start()
    try:
        result = verify(dbsession)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_verify_streams_rows_so_memory_does_not_grow_with_the_log(dbsession):
    """Four times the rows, the same peak: ``verify`` holds one batch at a time.

    Loading every row at once takes about 1.2 kB a row (24 MB for 20,000, so
    well over 100 MB for a 100,000-event log); streamed, the peak stays near
    one batch's few MB whatever the length.
    """
    first = chain(5_000)
    insert_rows(dbsession, first)
    small, small_peak = traced_peak(dbsession)
    insert_rows(dbsession, chain(15_000, prev_hash=first[-1]["hash"]))
    del first
    large, large_peak = traced_peak(dbsession)

    assert small == VerifyResult(ok=True, checked=5_000, first_bad_id=None)
    assert large == VerifyResult(ok=True, checked=20_000, first_bad_id=None)
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)
    assert large_peak < 10_000_000, large_peak


# wiring


def test_includeme_registers_the_service_on_the_request_session(dbsession):
    config = Configurator()
    config.include("pyramid_services")
    config.include("idp.services.audit")
    config.commit()
    env = prepare(registry=config.registry)
    try:
        request = env["request"]
        request.dbsession = dbsession
        log = request.find_service(IAuditLog, context=None)
        assert isinstance(log, AuditLog)
        assert log.dbsession is dbsession
        assert log is request.find_service(IAuditLog, context=None)
        assert log.record("test.wired").prev_hash == GENESIS_HASH
    finally:
        env["closer"]()
