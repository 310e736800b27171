"""The rate limiter on real storage: the database (SQLite and PostgreSQL) and Redis.

The same behaviour runs on every backend (``LimiterBehaviour``); each backend
adds what only it has (purging, replays, what storage holds). OPS-01 runs
two "nodes" (two engines, or two Redis clients) with real commits.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import transaction
from pyramid.config import Configurator
from pyramid.scripting import prepare
from sqlalchemy import delete, func, select

from idp.db import get_tm_session, make_engine
from idp.models import ThrottleCounter
from idp.services.interfaces import IRateLimiter
from idp.services.ratelimit import (
    REGISTRY_REDIS,
    DatabaseRateLimiter,
    Limit,
    RedisRateLimiter,
    make_redis_client,
)
from idp.settings import SettingsError
from tests import redis_server

pytestmark = pytest.mark.postgresql

SECRET = "test-only-ratelimit-hmac-key-0123456789abcdef"
# Midnight UTC: the start of a window for every limit used here.
BASE = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
LIMITS = {
    "test.a": Limit(5, 60),
    "test.b": Limit(5, 60),
    "test.slide": Limit(10, 60),
}
THREADS = 10
HITS_PER_THREAD = 5


class Clock:
    """A settable ``utcnow``."""

    def __init__(self, now: dt.datetime = BASE) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


class LimiterBehaviour:
    """What every backend must do; subclasses provide ``make(clock, limits)``."""

    def test_the_hit_after_the_limit_is_refused(self, make, clock):
        limiter = make(clock)
        decisions = [limiter.hit("test.a", "900101-14-5678") for _ in range(6)]
        assert [d.count for d in decisions] == [1, 2, 3, 4, 5, 6]
        assert [d.allowed for d in decisions] == [True] * 5 + [False]
        assert [d.retry_after for d in decisions[:5]] == [0] * 5
        assert decisions[5].retry_after > 0
        assert {d.limit for d in decisions} == {5}
        # Controls: another key, and the same key under another limiter.
        assert limiter.hit("test.a", "900101-14-5679").count == 1
        assert limiter.hit("test.b", "900101-14-5678").count == 1

    def test_check_counts_nothing_and_agrees_with_the_next_hit(self, make, clock):
        limiter = make(clock)
        assert limiter.check("test.a", "k").count == 0
        for _ in range(4):
            limiter.hit("test.a", "k")
        assert limiter.check("test.a", "k").count == 4
        assert limiter.check("test.a", "k").allowed
        assert limiter.hit("test.a", "k").allowed
        refused = limiter.check("test.a", "k")
        assert (refused.allowed, refused.count) == (False, 5)
        assert refused.retry_after > 0
        assert not limiter.hit("test.a", "k").allowed

    def test_reset_forgets_only_its_key(self, make, clock):
        limiter = make(clock)
        for _ in range(6):
            limiter.hit("test.a", "k")
        limiter.hit("test.a", "other")
        limiter.hit("test.b", "k")
        clock.advance(60)  # the hits are in the previous window now
        limiter.hit("test.a", "k")
        limiter.reset("test.a", "k")
        assert limiter.check("test.a", "k").count == 0
        assert limiter.hit("test.a", "k") == limiter.check("test.a", "k")
        assert limiter.check("test.a", "k").count == 1
        assert limiter.check("test.a", "other").count == 1
        assert limiter.check("test.b", "k").count == 1

    def test_the_window_slides_with_the_clock(self, make, clock):
        limiter = make(clock)
        for _ in range(10):
            limiter.hit("test.slide", "k")
        clock.advance(60)  # next window: the previous one still counts in full
        assert limiter.check("test.slide", "k").count == 10
        assert not limiter.check("test.slide", "k").allowed
        clock.advance(30)  # half of it
        assert limiter.check("test.slide", "k").count == 5
        assert limiter.hit("test.slide", "k").count == 6
        clock.advance(15)  # a quarter of the ten, plus the one: 3.5 -> 4
        assert limiter.check("test.slide", "k").count == 4
        clock.advance(45)  # the ten are two windows back; the one weighs 0.5 -> 1
        assert limiter.check("test.slide", "k").count == 1
        clock.advance(30)  # the one is two windows back too
        assert limiter.check("test.slide", "k").count == 0

    def test_retry_after_is_when_an_attempt_is_allowed_again(self, make, clock):
        limiter = make(clock)
        clock.advance(20)
        for _ in range(6):
            last = limiter.hit("test.a", "k")
        assert not last.allowed
        clock.advance(last.retry_after - 1)
        assert not limiter.check("test.a", "k").allowed
        clock.advance(1)
        assert limiter.check("test.a", "k").allowed
        assert limiter.hit("test.a", "k").allowed


# The database


class TestDatabaseLimiter(LimiterBehaviour):
    @pytest.fixture
    def make(self, dbsession):
        def make(clock, limits=LIMITS):
            return DatabaseRateLimiter(dbsession, SECRET, limits, clock=clock)

        return make

    @staticmethod
    def rows(dbsession):
        return dbsession.execute(select(ThrottleCounter.__table__)).all()

    def test_a_hit_deletes_nothing_however_many_windows_expired(
        self, make, clock, dbsession
    ):
        """Expired windows go in the background (``idp.services.purge``,
        ``throttle_counters``), not in the sign-in that hits a limit: the
        hit used to delete up to 20 rows itself."""
        from sqlalchemy import event

        limiter = make(clock)
        for number in range(25):
            limiter.hit("test.a", f"k{number}")
        clock.advance(121)
        statements: list[str] = []

        def record(conn, cursor, statement, parameters, context, executemany):
            statements.append(statement)

        connection = dbsession.connection()
        event.listen(connection, "before_cursor_execute", record)
        try:
            assert limiter.hit("test.a", "new").count == 1
        finally:
            event.remove(connection, "before_cursor_execute", record)
        assert statements and not [s for s in statements if "DELETE" in s.upper()]
        assert len(self.rows(dbsession)) == 26

    def test_an_aborted_attempt_counts_nothing(self, make, clock, dbsession):
        """A request pyramid_retry replays counts once: its hits roll back."""
        limiter = make(clock)
        attempt = dbsession.begin_nested()
        assert limiter.hit("test.a", "k").count == 1
        attempt.rollback()
        assert limiter.hit("test.a", "k").count == 1


# Redis


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    reason = redis_server.missing_reason()
    if reason:
        pytest.skip(reason)
    with redis_server.RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def redis_client(redis_url):
    client = make_redis_client(redis_url)
    client.flushdb()
    yield client
    client.close()


class TestRedisLimiter(LimiterBehaviour):
    @pytest.fixture
    def make(self, redis_client):
        def make(clock, limits=LIMITS, counted=None, client=redis_client):
            return RedisRateLimiter(
                client, SECRET, limits, clock=clock, counted=counted
            )

        return make

    def test_keys_reach_redis_only_hashed_and_expire(self, make, clock, redis_client):
        limiter = make(clock)
        limiter.hit("test.a", "900101-14-5678")
        limiter.hit("test.b", "192.0.2.10")
        keys = sorted(key.decode() for key in redis_client.keys("*"))
        assert len(keys) == 2
        for key in keys:
            assert re.fullmatch(r"test\.[ab]:[0-9a-f]{32}:\d+", key)
            assert 0 < redis_client.ttl(key) <= 120
        assert not any("900101" in key or "192.0.2" in key for key in keys)

    def test_a_replayed_request_counts_once(self, make, clock):
        """pyramid_retry replays with the same environ, so the same ledger."""
        counted = {}
        first = make(clock, counted=counted)
        assert [first.hit("test.a", "k").count for _ in range(2)] == [1, 2]
        replay = make(clock, counted=counted)
        assert [replay.hit("test.a", "k").count for _ in range(3)] == [2, 2, 3]
        # Control: another request (its own ledger) counts as usual.
        assert make(clock, counted={}).hit("test.a", "k").count == 4

    def test_ops_01_two_nodes_alternating_lock_at_the_set_count(
        self, make, clock, redis_url
    ):
        """OPS-01: two nodes (two Redis clients) alternating share one count."""
        other_client = make_redis_client(redis_url)
        try:
            nodes = [make(clock), make(clock, client=other_client)]
            decisions = [nodes[n % 2].hit("test.a", "k") for n in range(6)]
            assert [d.count for d in decisions] == [1, 2, 3, 4, 5, 6]
            assert [d.allowed for d in decisions] == [True] * 5 + [False]
            assert nodes[1].hit("test.a", "control").allowed
        finally:
            other_client.close()

    def test_ops_01_concurrent_hits_count_exactly(self, make, clock, redis_url):
        """OPS-01: hits racing from many threads each get their own count."""
        clients = [make_redis_client(redis_url) for _ in range(2)]
        limits = {"test.race": Limit(30, 3600)}
        try:
            counts = _race(
                lambda n: make(clock, limits, client=clients[n % 2]).hit(
                    "test.race", "k"
                )
            )
        finally:
            for client in clients:
                client.close()
        _assert_exact(counts, limit=30)


def test_includeme_database_limiter_uses_the_request_session(dbsession):
    config = Configurator(
        settings={
            "idp.hmac_key": SECRET,
            "ratelimit.login.identifier": "3/60",
        }
    )
    config.include("pyramid_services")
    config.include("idp.services.ratelimit")
    config.commit()
    env = prepare(registry=config.registry)
    try:
        request = env["request"]
        request.dbsession = dbsession
        limiter = request.find_service(IRateLimiter, context=None)
        assert isinstance(limiter, DatabaseRateLimiter)
        assert limiter is request.find_service(IRateLimiter, context=None)
        decisions = [limiter.hit("login.identifier", "k") for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert limiter.check("login.global", "site").limit == 500
        assert dbsession.scalar(select(func.count()).select_from(ThrottleCounter)) == 1
    finally:
        env["closer"]()


def test_includeme_redis_limiter_keeps_one_client(redis_url, redis_client):
    config = Configurator(
        settings={"idp.hmac_key": SECRET, "ratelimit.storage": redis_url}
    )
    config.include("pyramid_services")
    config.include("idp.services.ratelimit")
    config.commit()
    client = config.registry[REGISTRY_REDIS]
    try:
        for _ in range(2):
            env = prepare(registry=config.registry)
            try:
                limiter = env["request"].find_service(IRateLimiter, context=None)
                assert isinstance(limiter, RedisRateLimiter)
                assert limiter.client is client
                limiter.hit("reset.email", "siti@example.com")
            finally:
                env["closer"]()
        assert len(redis_client.keys("reset.email:*")) == 1
    finally:
        client.close()


@pytest.mark.parametrize(
    ("setting", "value"),
    [("ratelimit.login.identifier", "ten/900"), ("ratelimit.storage", "memory://")],
)
def test_includeme_refuses_bad_settings_at_start(setting, value):
    config = Configurator(settings={"idp.hmac_key": SECRET, setting: value})
    config.include("pyramid_services")
    with pytest.raises(SettingsError, match=f"^{re.escape(setting)}: "):
        config.include("idp.services.ratelimit")


# OPS-01 on the database: two engines, real commits


def _race(hit) -> list:
    """Run ``THREADS * HITS_PER_THREAD`` hits at once; return their decisions."""
    start = threading.Barrier(THREADS)

    def worker(number):
        start.wait()
        return [hit(number) for _ in range(HITS_PER_THREAD)]

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(worker, range(THREADS)))
    return [decision for result in results for decision in result]


def _assert_exact(decisions, limit: int) -> None:
    total = THREADS * HITS_PER_THREAD
    assert sorted(d.count for d in decisions) == list(range(1, total + 1))
    assert sum(d.allowed for d in decisions) == limit
    assert all(d.allowed == (d.count <= limit) for d in decisions)


class Node:
    """One app instance: its own engine, and a transaction per hit."""

    def __init__(self, db_url: str, clock: Clock, limits=LIMITS) -> None:
        self.engine = make_engine({"sqlalchemy.url": db_url})
        self.clock = clock
        self.limits = limits

    def run(self, action):
        manager = transaction.TransactionManager(explicit=True)
        session = get_tm_session(self.engine, manager)
        try:
            with manager:
                limiter = DatabaseRateLimiter(
                    session, SECRET, self.limits, clock=self.clock
                )
                return action(limiter)
        finally:
            session.close()

    def hit(self, name: str, key: str):
        return self.run(lambda limiter: limiter.hit(name, key))


@pytest.fixture
def nodes(db_engine, db_url):
    """Two nodes on the test database; the throttle table is emptied after."""
    made = []

    def node(clock, limits=LIMITS):
        made.append(Node(db_url, clock, limits))
        return made[-1]

    try:
        yield node
    finally:
        try:
            with db_engine.begin() as conn:
                conn.execute(delete(ThrottleCounter.__table__))
        finally:
            for each in made:
                each.engine.dispose()


def test_ops_01_two_nodes_alternating_lock_at_the_set_count(nodes, clock):
    """OPS-01: attempts alternating over two nodes lock at the set count."""
    first, second = nodes(clock), nodes(clock)
    decisions = [(first, second)[n % 2].hit("test.a", "k") for n in range(6)]
    assert [d.count for d in decisions] == [1, 2, 3, 4, 5, 6]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    # Each node sees the other's hits, committed.
    assert first.run(lambda limiter: limiter.check("test.a", "k")).count == 6
    # Control: another key is not limited on either node.
    assert second.hit("test.a", "control").allowed
    # Success on one node resets the count for both.
    second.run(lambda limiter: limiter.reset("test.a", "k"))
    assert first.hit("test.a", "k").count == 1


def test_ops_01_concurrent_hits_count_exactly(nodes, clock, db_url):
    """OPS-01: hits racing from 10 threads over two nodes each get their own count."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serves one writer at a time; the race is PostgreSQL's")
    limits = {"test.race": Limit(30, 3600)}
    pair = [nodes(clock, limits), nodes(clock, limits)]
    decisions = _race(lambda number: pair[number % 2].hit("test.race", "k"))
    _assert_exact(decisions, limit=30)
    assert pair[0].run(lambda limiter: limiter.check("test.race", "k")).count == (
        THREADS * HITS_PER_THREAD
    )
