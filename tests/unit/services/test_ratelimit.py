"""Rate limiter arithmetic, settings, address prefixes and hashed keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re

import pytest
from sqlalchemy import select

from idp.models import ThrottleCounter
from idp.services.ratelimit import (
    LIMITS,
    DatabaseRateLimiter,
    Decision,
    Limit,
    address_prefix,
    decide,
    parse_limit,
    parse_limits,
    parse_storage,
    retry_after,
    sliding_count,
    storage_key,
    window_position,
    window_start,
)
from idp.settings import SettingsError

pytestmark = pytest.mark.postgresql

SECRET = "test-only-ratelimit-hmac-key-0123456789abcdef"
US = 1_000_000
# Midnight UTC: the start of a window for every limit that divides a day.
BASE = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def test_defaults_are_the_documented_policy():
    assert dict(LIMITS) == {
        "login.identifier": Limit(10, 900),
        "login.address": Limit(30, 900),
        "login.prefix": Limit(100, 900),
        "login.global": Limit(500, 300),
        "login.lookup.address": Limit(200, 3600),
        "login.lookup.prefix": Limit(1000, 3600),
        "login.lookup.global": Limit(90000, 900),
        "login.locks": Limit(3, 86400),
        "reset.address": Limit(10, 3600),
        "reset.email": Limit(3, 3600),
        "account.email": Limit(5, 86400),
        "register.address": Limit(200, 3600),
        "captcha.address": Limit(600, 3600),
        "mdq.entity": Limit(1, 600),
        "mdq.address": Limit(20, 600),
        "mdq.global": Limit(60, 60),
    }


# Windows and the sliding count


def test_windows_are_numbered_from_the_epoch():
    index, elapsed = window_position(BASE + dt.timedelta(seconds=90.5), 60)
    assert window_start(index, 60) == BASE + dt.timedelta(seconds=60)
    assert elapsed == 30_500_000
    assert window_position(BASE, 900)[1] == 0
    assert window_start(window_position(BASE, 86400)[0], 86400) == BASE


@pytest.mark.parametrize(
    ("current", "previous", "elapsed_s", "expected"),
    [
        (0, 10, 0, 10),  # at a window's start the previous counts in full
        (0, 10, 30, 5),  # half way, half of it
        (0, 10, 45, 3),  # 2.5, rounded up: never below what is still there
        (4, 10, 30, 9),  # plus the current window in full
        (0, 3, 30, 2),  # 1.5 rounds up
        (7, 100, 59.999999, 8),  # just before the end, 0.0017 of 100 is still 1
        (0, 0, 10, 0),
    ],
)
def test_sliding_count_weights_the_previous_window(
    current, previous, elapsed_s, expected
):
    assert sliding_count(current, previous, round(elapsed_s * US), 60) == expected


def test_a_hit_is_allowed_up_to_the_limit_and_a_check_below_it():
    limit = Limit(5, 60)
    assert decide(5, 0, 0, limit, counted=True) == Decision(True, 5, 5, 0)
    refused = decide(6, 0, 0, limit, counted=True)
    assert (refused.allowed, refused.count) == (False, 6)
    assert refused.retry_after > 0
    # A check answers "may one more attempt happen?", as the next hit would.
    assert decide(4, 0, 0, limit, counted=False).allowed
    assert not decide(5, 0, 0, limit, counted=False).allowed


def _count_later(current, previous, elapsed_us, limit, seconds):
    """The count ``seconds`` later with no hit in between, by brute force."""
    window = limit.seconds * US
    position = elapsed_us + seconds * US
    if position < window:
        return sliding_count(current, previous, position, limit.seconds)
    if position < 2 * window:
        return sliding_count(0, current, position - window, limit.seconds)
    return 0


@pytest.mark.parametrize("limit", [Limit(1, 60), Limit(3, 60), Limit(10, 7)])
def test_retry_after_is_the_first_whole_second_under_the_limit(limit):
    checked = 0
    for current in range(15):
        for previous in range(15):
            for elapsed_us in (0, 1, US // 2, 3 * US, limit.seconds * US - 1):
                if elapsed_us >= limit.seconds * US:
                    continue
                wait = retry_after(current, previous, elapsed_us, limit)
                assert (
                    _count_later(current, previous, elapsed_us, limit, wait)
                    < limit.count
                )
                if wait:
                    checked += 1
                    assert (
                        _count_later(current, previous, elapsed_us, limit, wait - 1)
                        >= limit.count
                    )
    assert checked > 100


# Settings


def test_settings_override_a_limit_and_keep_the_others():
    limits = parse_limits(
        {
            "ratelimit.login.identifier": " 5 / 60 ",
            "ratelimit.reset.email": "",
            "ratelimit.storage": "database",
            "idp.hmac_key": SECRET,
        }
    )
    assert limits["login.identifier"] == Limit(5, 60)
    assert limits["reset.email"] == LIMITS["reset.email"]
    assert limits["login.global"] == LIMITS["login.global"]


@pytest.mark.parametrize(
    "value",
    ["10", "ten/60", "10/sixty", "10/60/1", "0/60", "-1/60", "10/0", "10/2592001", "/"],
)
def test_a_bad_limit_names_its_setting(value):
    with pytest.raises(SettingsError, match=r"^ratelimit\.login\.address: "):
        parse_limits({"ratelimit.login.address": value})


def test_a_good_limit_parses():
    assert parse_limit("ratelimit.x", "1/2592000") == Limit(1, 2592000)


def test_an_unknown_limiter_setting_is_refused():
    with pytest.raises(SettingsError, match=r"^ratelimit\.login\.identifer: "):
        parse_limits({"ratelimit.login.identifer": "5/60"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "database"),
        ("", "database"),
        (" database ", "database"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("rediss://cache.example:6380", "rediss://cache.example:6380"),
    ],
)
def test_storage_is_the_database_or_redis(value, expected):
    assert parse_storage(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "memory://",
        "http://127.0.0.1:6379",
        "redis://",
        "redis://:hunter2-secret@host:notaport/0",
        "db",
    ],
)
def test_bad_storage_is_refused_without_repeating_it(value):
    with pytest.raises(SettingsError, match=r"^ratelimit\.storage: ") as caught:
        parse_storage(value)
    assert "hunter2" not in str(caught.value)


# Address prefixes


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("192.0.2.77", "192.0.2.0/24"),
        (" 192.0.2.1 ", "192.0.2.0/24"),
        ("198.51.100.255", "198.51.100.0/24"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::9", "2001:db8:1:2::/64"),
        ("2001:0db8:0001:0002:ffff::", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:192.0.2.77", "192.0.2.0/24"),
        ("::1", "::/64"),
    ],
)
def test_address_prefix(address, expected):
    assert address_prefix(address) == expected


def test_neighbours_share_a_prefix_and_strangers_do_not():
    assert address_prefix("192.0.2.1") == address_prefix("192.0.2.254")
    assert address_prefix("192.0.2.1") != address_prefix("192.0.3.1")
    assert address_prefix("2001:db8::1") == address_prefix("2001:db8::ffff:1")
    assert address_prefix("2001:db8::1") != address_prefix("2001:db8:0:1::1")


@pytest.mark.parametrize(
    "junk", ["", "unknown", "192.0.2", "010.0.0.1", "2001:db8::g", "192.0.2.1/24"]
)
def test_anything_else_is_its_own_prefix(junk):
    assert address_prefix(junk) == junk.strip()


# Hashed keys


def test_storage_key_is_a_keyed_hash():
    derived = hmac.new(SECRET.encode(), b"idp ratelimit v1", hashlib.sha256).digest()
    key = storage_key(derived, "login.identifier", "900101-14-5678")
    expected = hmac.new(derived, b"900101-14-5678", hashlib.sha256).hexdigest()
    assert key == "login.identifier:" + expected[:32]
    assert re.fullmatch(r"login\.identifier:[0-9a-f]{32}", key)
    other = hmac.new(b"another-key", b"idp ratelimit v1", hashlib.sha256).digest()
    assert storage_key(other, "login.identifier", "900101-14-5678") != key


def test_a_limiter_needs_a_secret_and_known_names(dbsession):
    with pytest.raises(ValueError, match=r"idp\.hmac_key"):
        DatabaseRateLimiter(dbsession, "")
    limiter = DatabaseRateLimiter(dbsession, SECRET)
    with pytest.raises(KeyError, match=r"login\.nope"):
        limiter.hit("login.nope", "x")


def test_keys_reach_the_database_only_hashed(dbsession):
    limiter = DatabaseRateLimiter(dbsession, SECRET, clock=lambda: BASE)
    raw = {
        "login.identifier": "900101-14-5678",
        "login.address": "192.0.2.10",
        "login.prefix": address_prefix("192.0.2.10"),
        "reset.email": "Siti.Aminah@example.com",
    }
    for name, key in raw.items():
        limiter.hit(name, key)
    rows = dbsession.execute(select(ThrottleCounter.__table__)).all()
    assert len(rows) == len(raw)
    stored = " ".join(str(value) for row in rows for value in row)
    for key in raw.values():
        assert key not in stored
    for fragment in ("900101", "5678", "192.0.2", "Aminah", "example.com"):
        assert fragment not in stored
    keys = {row.key for row in rows}
    assert all(re.fullmatch(r"[a-z.]+:[0-9a-f]{32}", key) for key in keys)
    derived = hmac.new(SECRET.encode(), b"idp ratelimit v1", hashlib.sha256).digest()
    assert keys == {storage_key(derived, name, key) for name, key in raw.items()}
