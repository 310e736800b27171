"""Sign-in: the identifier step, registered versus unregistered, and throughput.

Part 1 (AUTH-01 timing): N registered and N unregistered MyKad numbers go
through the identifier step (POST /login, then GET /login/image, which looks
the number up and shows the user's image or the decoy), interleaved so that
drift in the machine affects both alike. Prints p50/p95/p99 of each and the
differences of the medians and of the 99th percentiles.

Part 2: complete sign-ins (identifier, image confirmation, password) from
several threads at the given bcrypt cost, through the whole WSGI stack.

Usage::

    .venv/bin/python bench/bench_signin.py [--database sqlite|postgresql]
        [-n 300] [--threads 4] [--signins 100] [--rounds 12]

PostgreSQL comes from ``IDP_TEST_POSTGRESQL_URL``; its schema is rebuilt.
Not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import webtest
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_registration import HOST, build_app  # noqa: E402

from idp.models import User  # noqa: E402
from idp.services.passwords import BcryptPasswordService  # noqa: E402

PASSWORD = "kopi o kosong tanpa gula"  # noqa: S105 (a benchmark user's password)


def browser(app, address: str) -> webtest.TestApp:
    return webtest.TestApp(
        app,
        extra_environ={
            "HTTP_HOST": HOST,
            "HTTP_ORIGIN": f"https://{HOST}",
            "wsgi.url_scheme": "https",
            "REMOTE_ADDR": address,
        },
    )


def csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def make_users(engine, count: int, rounds: int) -> list[str]:
    hashed = BcryptPasswordService(rounds=rounds).hash(PASSWORD)
    numbers = [f"08051214{n:04d}" for n in range(count)]
    with Session(engine) as session, session.begin():
        for number in numbers:
            session.add(
                User(
                    identifier_kind="mykad",
                    identifier=number,
                    email=f"guru{number}@example.com.my",
                    full_name="Cikgu Bench",
                    phone="+60123456789",
                    category="educator",
                    locale="ms",
                    security_image="cat",
                    security_phrase="Nasi lemak kegemaran saya",
                    password_hash=hashed,
                )
            )
    return numbers


def identifier_step(client: webtest.TestApp, number: str) -> float:
    token = csrf(client.get("/login").text)
    started = time.perf_counter()
    client.post("/login", {"csrf_token": token, "identifier": number}, status=303)
    client.get("/login/image", status=200)
    return (time.perf_counter() - started) * 1000


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def timing(app, known: list[str], n: int) -> None:
    unknown = [f"09010110{i:04d}" for i in range(n)]
    client = browser(app, "192.0.2.1")
    for i in range(20):  # warm up both paths
        identifier_step(client, known[i % len(known)])
        identifier_step(client, unknown[i])
    times = {"registered": [], "unregistered": []}
    for i in range(n):
        times["registered"].append(identifier_step(client, known[i % len(known)]))
        times["unregistered"].append(identifier_step(client, unknown[i]))
    for label, values in times.items():
        print(
            f"identifier step, {label:<12} n={len(values)}  "
            f"p50 {statistics.median(values):6.2f} ms  "
            f"p95 {percentile(values, 0.95):6.2f} ms  "
            f"p99 {percentile(values, 0.99):6.2f} ms"
        )
    p50 = statistics.median(times["registered"]) - statistics.median(
        times["unregistered"]
    )
    p99 = percentile(times["registered"], 0.99) - percentile(
        times["unregistered"], 0.99
    )
    print(
        f"difference (registered - unregistered): p50 {p50:+.2f} ms, p99 {p99:+.2f} ms"
    )


def password_step(client: webtest.TestApp, number: str) -> float:
    """A wrong password, timed from the POST of the password alone."""
    token = csrf(client.get("/login").text)
    client.post("/login", {"csrf_token": token, "identifier": number}, status=303)
    client.post("/login/image", {"csrf_token": token, "confirm": "y"}, status=303)
    started = time.perf_counter()
    client.post(
        "/login/password", {"csrf_token": token, "password": "wrong"}, status=400
    )
    return (time.perf_counter() - started) * 1000


def password_timing(app, known: list[str], n: int) -> None:
    client = browser(app, "192.0.2.2")
    times = {"registered": [], "unregistered": []}
    for i in range(n):
        times["registered"].append(password_step(client, known[i % len(known)]))
        times["unregistered"].append(password_step(client, f"09010111{i:04d}"))
    for label, values in times.items():
        print(
            f"wrong password, {label:<12} n={len(values)}  "
            f"p50 {statistics.median(values):6.1f} ms  "
            f"p95 {percentile(values, 0.95):6.1f} ms"
        )
    p50 = statistics.median(times["registered"]) - statistics.median(
        times["unregistered"]
    )
    print(f"difference (registered - unregistered): p50 {p50:+.1f} ms")


def sign_in(client: webtest.TestApp, number: str) -> None:
    token = csrf(client.get("/login").text)
    client.post("/login", {"csrf_token": token, "identifier": number}, status=303)
    client.post("/login/image", {"csrf_token": token, "confirm": "y"}, status=303)
    response = client.post(
        "/login/password", {"csrf_token": token, "password": PASSWORD}
    )
    assert response.status_int == 303, response.status
    client.reset()


def throughput(
    app, numbers: list[str], signins: int, threads: int, rounds: int
) -> None:
    latencies: list[float] = []
    lock = threading.Lock()
    share = signins // threads

    def run(worker: int) -> None:
        client = browser(app, f"192.0.2.{100 + worker}")
        for i in range(share):
            started = time.perf_counter()
            sign_in(client, numbers[(worker * share + i) % len(numbers)])
            with lock:
                latencies.append((time.perf_counter() - started) * 1000)

    workers = [threading.Thread(target=run, args=(w,)) for w in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    print(
        f"sign-ins, bcrypt {rounds}, {threads} threads: "
        f"{len(latencies)} in {elapsed:.1f} s = {len(latencies) / elapsed:.1f}/s  "
        f"p50 {statistics.median(latencies):.0f} ms  "
        f"p95 {percentile(latencies, 0.95):.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database", choices=["sqlite", "postgresql"], default="sqlite"
    )
    parser.add_argument("-n", type=int, default=300, help="identifier steps per kind")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--signins", type=int, default=100)
    parser.add_argument(
        "--passwords", type=int, default=60, help="wrong passwords per kind"
    )
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    if args.database == "postgresql":
        url = os.environ.get("IDP_TEST_POSTGRESQL_URL")
        if not url:
            sys.exit("set IDP_TEST_POSTGRESQL_URL for the PostgreSQL run")
    else:
        url = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite"
    with tempfile.TemporaryDirectory() as tmp:
        app, engine = build_app(
            url,
            Path(tmp),
            args.rounds,
            extra={
                "captcha.enabled": "false",
                # Benchmark traffic comes from a few addresses: lift the
                # per-address limits so they measure work, not refusals.
                "ratelimit.login.address": "1000000/60",
                "ratelimit.login.prefix": "1000000/60",
                # ... and on the number, so wrong passwords never lock.
                "ratelimit.login.identifier": "1000000/60",
                "ratelimit.login.global": "1000000/60",
                # ... and on identifier lookups, which past 200 an hour from
                # one address would meet the captcha (AUTH-27).
                "ratelimit.login.lookup.address": "1000000/60",
                "ratelimit.login.lookup.prefix": "1000000/60",
                "ratelimit.login.lookup.global": "1000000/60",
            },
        )
        numbers = make_users(engine, 200, args.rounds)
        print(f"database {args.database}, bcrypt cost {args.rounds}")
        timing(app, numbers, args.n)
        password_timing(app, numbers, args.passwords)
        throughput(app, numbers, args.signins, args.threads, args.rounds)
        engine.dispose()


if __name__ == "__main__":
    main()
