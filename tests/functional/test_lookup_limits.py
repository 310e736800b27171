"""Limits on the identifier step: harvesting accounts in a loop (AUTH-27).

The attack is the one of issue 11 item 4: a script posts numbers to the
identifier step and reads the image page that follows, collecting the image
and phrase of every registered number it hits. Past the per-address, per-/24
and site-wide limits the identifier step asks for the captcha instead (or,
with the captcha off, refuses), and no image or phrase is shown until it is
solved; the page is the same whether the number is registered or not.
"""

from __future__ import annotations

import random
import re

import pytest
import webtest

from idp.services.ratelimit import LIMITS, make_redis_client
from tests import redis_server
from tests.app import browser, captcha_answer, make_app
from tests.factories import display, make_user

LOOKUP = "login.lookup.address"


def lookup(client, number: str):
    """Post ``number`` to the identifier step as a script would; the answer."""
    form = client.get("/login?lang=en").forms["login-form"]
    form["identifier"] = number
    return form.submit(expect_errors=True)


def script(client):
    """A harvesting script's loop: the identifier form read once, then posted
    with number after number (``post(number)``, the answer), as a script
    that has seen the page once does; the limits count the posts."""
    form = client.get("/login?lang=en").forms["login-form"]

    def post(number: str):
        form["identifier"] = number
        return form.submit(expect_errors=True)

    return post


def harvested(client, response) -> tuple[str, str] | None:
    """The image and phrase a lookup revealed, or None."""
    if response.status_int != 303:
        assert "security-image" not in response.text
        return None
    page = client.get("/login/image")
    image = page.html.select_one("#security-image img")["src"]
    phrase = page.html.select_one("#security-phrase").get_text()
    return image.rsplit("/", 1)[-1].removesuffix(".svg"), phrase


def random_numbers(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    numbers = set()
    while len(numbers) < count:
        numbers.add(
            f"{rng.randint(70, 99)}0{rng.randint(1, 9)}1{rng.randint(0, 9)}"
            f"-{rng.choice(['01', '08', '10', '14'])}-{rng.randint(0, 9999):04d}"
        )
    return sorted(numbers)


def test_auth_27_harvesting_loop_stops_at_the_address_limit(app, tm, dbsession):
    """AUTH-27: 300 lookups from one address; past the limit none shows an image.

    Twenty registered numbers, each with its own phrase, hide among 280
    random ones. The shipped per-address limit decides how many lookups are
    answered; the registered numbers looked up after it are not revealed.
    """
    phrases = {}
    for n in range(20):
        user = make_user(
            dbsession, identifier=f"0805121{n:05d}", security_phrase=f"Rahsia {n} saya"
        )
        phrases[display(user)] = user.security_phrase
    numbers = random_numbers(280, seed=11) + list(phrases)
    random.Random(4).shuffle(numbers)

    attacker = browser(app, tm, dbsession, "198.51.100.7")
    post = script(attacker)
    answers = [harvested(attacker, post(number)) for number in numbers]

    answered = sum(answer is not None for answer in answers)
    assert answered < len(numbers), f"all {answered} lookups answered"
    limit = LIMITS[LOOKUP].count
    assert answered == limit
    assert all(answer is not None for answer in answers[:limit])
    assert all(answer is None for answer in answers[limit:])
    found = {
        n
        for n, a in zip(numbers, answers, strict=True)
        if a and a[1] in phrases.values()
    }
    assert found == {n for n in numbers[:limit] if n in phrases}
    assert len(found) < len(phrases)
    # Control: a pupil elsewhere is not affected by the attacker's address.
    elsewhere = browser(app, tm, dbsession, "203.0.113.9")
    assert harvested(elsewhere, lookup(elsewhere, numbers[-1])) is not None


SMALL_LIMITS = {
    "ratelimit.login.lookup.address": "3/3600",
    "ratelimit.login.lookup.prefix": "5/3600",
    "ratelimit.login.lookup.global": "8/900",
}


@pytest.fixture(scope="module")
def limited_app(settings, db_engine):
    """The app with the captcha on and small lookup limits."""
    return make_app({**settings, **SMALL_LIMITS, "captcha.enabled": "true"}, db_engine)


@pytest.fixture(scope="module")
def limited_twin(settings, db_engine):
    """A second instance of ``limited_app``: another node on the same database."""
    return make_app({**settings, **SMALL_LIMITS, "captcha.enabled": "true"}, db_engine)


def page_shape(page, number: str) -> str:
    """A page with the typed number and the per-request tokens taken out."""
    text = page.text.replace(number, "NUMBER")
    text = re.sub(r'name="csrf_token" value="[^"]+"', "", text)
    text = re.sub(r'name="captcha_token" value="[^"]+"', "", text)
    return re.sub(r"/captcha/[^\"']+", "/captcha/TOKEN", text)


def use_up(client, count: int) -> None:
    for number in random_numbers(count, seed=count):
        assert harvested(client, lookup(client, number)) is not None


def test_auth_27_past_the_limit_the_captcha_takes_over_and_hides_the_image(
    limited_app, tm, dbsession
):
    """AUTH-27: past the address limit no image shows until the captcha is solved.

    The refusal is the same page and status for a registered number and an
    unregistered one; solving the captcha (the control) shows the image.
    """
    user = make_user(dbsession)
    client = browser(limited_app, tm, dbsession, "198.51.100.20")
    use_up(client, 3)
    refused_known = lookup(client, display(user))
    refused_unknown = lookup(client, "900101-14-5678")
    for page in (refused_known, refused_unknown):
        assert page.status_int == 429
        assert "security-image" not in page.text
        assert "Many sign-ins have come from your network" in page.text
        assert page.forms["login-form"]["captcha_token"].value
    assert page_shape(refused_known, display(user)) == page_shape(
        refused_unknown, "900101-14-5678"
    )
    # The image step has nothing to show: back to the start.
    assert client.get("/login/image", status=303).location.endswith("/login")

    # A wrong answer is refused the same way; a right one continues.
    form = refused_known.forms["login-form"]
    token = form["captcha_token"].value
    right = captcha_answer(limited_app, token)
    form["captcha_answer"] = "000000" if right != "000000" else "111111"
    wrong = form.submit(expect_errors=True)
    assert wrong.status_int == 429
    assert "security-image" not in wrong.text
    form = wrong.forms["login-form"]
    assert form["identifier"].value == display(user)
    form["captcha_answer"] = captcha_answer(limited_app, form["captcha_token"].value)
    assert harvested(client, form.submit()) == ("cat", "Nasi lemak kegemaran saya")
    # Each solved captcha buys one lookup, not a free run.
    assert lookup(client, "900101-14-5679").status_int == 429


@pytest.mark.parametrize("lang", ["ms", "en"])
def test_identifier_step_past_the_limit_speaks_both_languages(
    limited_app, tm, dbsession, lang
):
    client = browser(limited_app, tm, dbsession, "198.51.100.21")
    use_up(client, 3)
    page = client.get(f"/login?lang={lang}", status=200)
    expected = {
        "ms": "Terlalu banyak",
        "en": "Many sign-ins have come from your network",
    }[lang]
    assert expected in page.text
    assert page.forms["login-form"]["captcha_token"].value


def test_auth_27_prefix_and_site_limits_catch_a_spread_harvest(
    limited_app, tm, dbsession
):
    """AUTH-27: addresses of one /24, then many networks, meet the captcha too."""
    # Five lookups from five addresses of one /24: each address is under
    # its own limit, the /24 is not.
    for n in range(5):
        use_up(browser(limited_app, tm, dbsession, f"198.51.100.{100 + n}"), 1)
    next_door = browser(limited_app, tm, dbsession, "198.51.100.200")
    assert lookup(next_door, "900101-14-5678").status_int == 429
    # Control: another network is still answered, until the site-wide count
    # (8, and the refused lookup above counted too) runs out for everyone.
    answered = 0
    for n in range(4):
        client = browser(limited_app, tm, dbsession, f"203.0.{n}.7")
        answered += harvested(client, lookup(client, "900101-14-5678")) is not None
    assert answered == 2
    fresh = browser(limited_app, tm, dbsession, "192.0.2.99")
    assert lookup(fresh, "900101-14-5678").status_int == 429


def test_auth_27_counters_are_shared_by_two_nodes(
    limited_app, limited_twin, tm, dbsession
):
    """AUTH-27: two app instances on one database count lookups together."""
    address = "198.51.100.40"
    node_a = browser(limited_app, tm, dbsession, address)
    node_b = browser(limited_twin, tm, dbsession, address)
    use_up(node_a, 2)
    use_up(node_b, 1)
    assert lookup(node_a, "900101-14-5678").status_int == 429
    assert lookup(node_b, "900101-14-5678").status_int == 429


def test_captcha_off_past_the_limit_refuses_with_a_wait(
    settings, db_engine, tm, dbsession
):
    app = make_app({**settings, **SMALL_LIMITS}, db_engine)
    client = browser(app, tm, dbsession, "198.51.100.50")
    use_up(client, 3)
    page = lookup(client, "900101-14-5678")
    assert page.status_int == 429
    assert "Wait a while, then try again." in page.text
    assert "captcha_token" not in page.forms["login-form"].fields
    assert "security-image" not in page.text


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    reason = redis_server.missing_reason()
    if reason:
        pytest.skip(reason)
    with redis_server.RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


def test_auth_27_counters_are_shared_by_two_nodes_through_redis(
    settings, db_engine, redis_url, tm, dbsession
):
    """AUTH-27: with Redis storage, two app instances (two clients) share counts."""
    client = make_redis_client(redis_url)
    client.flushdb()  # the server outlives one database's run
    client.close()
    nodes = [
        make_app(
            {**settings, **SMALL_LIMITS, "ratelimit.storage": redis_url}, db_engine
        )
        for _ in range(2)
    ]
    address = "198.51.100.60"
    node_a, node_b = (browser(node, tm, dbsession, address) for node in nodes)
    use_up(node_a, 2)
    use_up(node_b, 1)
    for node in (node_a, node_b):
        page = lookup(node, "900101-14-5678")
        assert page.status_int == 429
        assert "security-image" not in page.text
    # Control: another address is still answered by either node.
    other = browser(nodes[1], tm, dbsession, "203.0.113.60")
    assert harvested(other, lookup(other, "900101-14-5678")) is not None


@pytest.fixture
def committing_limited(limited_app, db_engine):
    """``limited_app`` with real transactions; every table emptied afterwards."""
    from idp.db import Base
    from idp.services.audit import audit_maintenance

    yield webtest.TestApp(
        limited_app,
        extra_environ={
            "HTTP_HOST": "idp.test",
            "HTTP_ORIGIN": "https://idp.test",
            "wsgi.url_scheme": "https",
            "REMOTE_ADDR": "198.51.100.70",
        },
    )
    with db_engine.begin() as conn, audit_maintenance(conn):
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


def test_auth_27_refused_lookups_commit_their_count_and_challenge(
    committing_limited, limited_app
):
    """AUTH-27: with real transactions, a 429 still keeps its count and captcha.

    The refusal is a 4xx; if it rolled back, the count would not grow and the
    challenge it shows could never be solved.
    """
    use_up(committing_limited, 3)
    refused = lookup(committing_limited, "900101-14-5678")
    assert refused.status_int == 429
    form = refused.forms["login-form"]
    form["captcha_answer"] = captcha_answer(limited_app, form["captcha_token"].value)
    assert harvested(committing_limited, form.submit()) is not None
    assert lookup(committing_limited, "900101-14-5679").status_int == 429


def test_auth_27_a_forged_x_forwarded_for_does_not_reset_the_address_limit(
    settings, db_engine, tm, dbsession
):
    """AUTH-27: a script names a new "client" in X-Forwarded-For on every post.

    The address a limit counts is the one the server gives the app
    (REMOTE_ADDR): the peer, or what a trusted proxy said. WebOb's
    ``client_addr`` reads the header's first entry whoever sent it, so the
    app relied on waitress clearing an untrusted header (its default); under
    any server that passes the header on (here WebTest, as a WSGI server
    would) every forged value was a fresh address with its own count.
    """
    app = make_app(
        {
            **settings,
            "ratelimit.login.lookup.address": "3/3600",
            "ratelimit.login.lookup.prefix": "1000/3600",
            "ratelimit.login.lookup.global": "1000/900",
            "captcha.enabled": "false",
        },
        db_engine,
    )
    attacker = browser(app, tm, dbsession, "198.51.100.77")
    form = attacker.get("/login?lang=en").forms["login-form"]
    answered = 0
    for n, number in enumerate(random_numbers(8, seed=77)):
        form["identifier"] = number
        page = form.submit(
            headers={"X-Forwarded-For": f"10.{n}.{n}.{n}"}, expect_errors=True
        )
        answered += page.status_int == 303
    assert answered == 3


@pytest.mark.parametrize(
    ("proxy", "seen"),
    [
        # production.ini's shape: the peer is the trusted proxy; the client
        # is the last address it reports (nginx appends it to any forged one).
        (
            {
                "trusted_proxy": "127.0.0.1",
                "trusted_proxy_count": "1",
                "trusted_proxy_headers": "x-forwarded-for x-forwarded-proto",
                "clear_untrusted_proxy_headers": "yes",
            },
            "203.0.113.5",
        ),
        # No proxy trusted: the peer itself, whatever the header says.
        ({}, "127.0.0.1"),
    ],
    ids=["behind-a-trusted-proxy", "reached-directly"],
)
def test_the_client_address_is_what_waitress_trusts(app, proxy, seen):
    """AUTH-27's counts key on ``request.client_addr``: through real waitress
    it is the trusted proxy's report, or the peer, never a forged header."""
    from tests.served import exchange, request_bytes, serve

    with serve(app, **proxy) as port:
        answer = exchange(
            port,
            request_bytes(
                "GET",
                b"/_probe/client",
                headers=((b"X-Forwarded-For", b"6.6.6.6, 203.0.113.5"),),
            ),
        )
    assert answer.status == 200
    assert answer.body.decode() == seen
