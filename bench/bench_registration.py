"""Registration throughput through the full WSGI stack, on SQLite and PostgreSQL.

Each registration is what a browser does: GET /register (a session row, a
CSRF token and a captcha challenge are written), then POST the filled form
with the captcha solved (the challenge is consumed, the temporary password
hashed with bcrypt, the user and the sealed outbox message inserted, all in
one transaction). Requests go through the real app (pyramid_tm committing,
tweens, templates) via WebTest, from several threads at once, each thread a
separate browser with its own cookies. No network: this measures the app and
its database, not waitress.

Usage::

    .venv/bin/python bench/bench_registration.py [--database sqlite|postgresql|both]
        [-n 200] [--threads 4] [--rounds 12]

PostgreSQL comes from ``IDP_TEST_POSTGRESQL_URL`` (``scripts/test`` sets up
the cluster and prints nothing else; export the URL it uses). The schema is
dropped and rebuilt there. Not a test.
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
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from idp.config import configure  # noqa: E402
from idp.db import make_engine  # noqa: E402
from idp.migrations import alembic_config  # noqa: E402
from idp.saml import keys as keystore  # noqa: E402
from idp.services.captcha import ImageCaptcha  # noqa: E402
from tests.app import base_settings  # noqa: E402

HOST = "idp.bench"


def build_app(url: str, folder: Path, rounds: int, extra: dict | None = None):
    from alembic import command

    engine = make_engine({"sqlalchemy.url": url})
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    keystore.generate(folder / "certs", HOST, key_size=2048)
    # The test suite's settings (development.ini, memory mail, scratch key
    # folders), with the production bcrypt cost and the captcha on.
    settings = base_settings(folder)
    settings.update(
        {
            "idp.base_url": f"https://{HOST}",
            "idp.bcrypt_rounds": str(rounds),
            "captcha.enabled": "true",
            "sqlalchemy.url": url,
            "idp.dbengine": engine,
            **(extra or {}),
        }
    )
    app = configure(settings).make_wsgi_app()
    return app, engine


def registrations(app, first: int, count: int, latencies: list, lock) -> None:
    browser = webtest.TestApp(
        app,
        extra_environ={
            "HTTP_HOST": HOST,
            "HTTP_ORIGIN": f"https://{HOST}",
            "wsgi.url_scheme": "https",
        },
    )
    secret = app.registry.settings["idp.hmac_key"]
    solver = ImageCaptcha(None, secret, enabled=True, lifetime=60)
    for number in range(first, first + count):
        started = time.perf_counter()
        page = browser.get("/register").text
        # Read the two tokens as a browser would see them, without parsing
        # the whole page into a form: the client must not dominate the time.
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        token = re.search(r'name="captcha_token" value="([^"]+)"', page).group(1)
        fields = {
            "csrf_token": csrf,
            "category": "student",
            "id_type": "mykad",
            "mykad": f"08051214{number:04d}",
            "full_name": "Nur Aisyah binti Ahmad",
            "email": f"murid{number}@example.com.my",
            "email_confirm": f"murid{number}@example.com.my",
            "phone": "012-345 6789",
            "institution": "SK Taman Melati",
            "security_image": "cat",
            "security_phrase": "Nasi lemak kegemaran saya",
            "captcha_token": token,
            "captcha_answer": solver.answer(token),
            "action": "register",
        }
        response = browser.post("/register", fields)
        assert response.status_int == 303, response.status
        with lock:
            latencies.append(time.perf_counter() - started)


def run(label: str, url: str, n: int, threads: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app, engine = build_app(url, Path(tmp), rounds)
        registrations(app, 9000, 5, [], threading.Lock())  # warm up
        latencies: list[float] = []
        lock = threading.Lock()
        share = n // threads
        workers = [
            threading.Thread(
                target=registrations, args=(app, i * share, share, latencies, lock)
            )
            for i in range(threads)
        ]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
        with engine.connect() as conn:
            users = conn.scalar(text("SELECT count(*) FROM users"))
        engine.dispose()
    done = len(latencies)
    ms = sorted(x * 1000 for x in latencies)
    p95 = ms[int(0.95 * (done - 1))]
    print(
        f"{label:<11} bcrypt {rounds:>2}  threads {threads}  registrations {done:>4}"
        f"  {done / elapsed:7.1f}/s  p50 {statistics.median(ms):7.1f} ms"
        f"  p95 {p95:7.1f} ms  users {users}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database", choices=["sqlite", "postgresql", "both"], default="both"
    )
    parser.add_argument("-n", type=int, default=200, help="registrations (default 200)")
    parser.add_argument("--threads", type=int, default=4, help="concurrent browsers")
    parser.add_argument(
        "--rounds", type=int, default=12, help="bcrypt cost (default 12)"
    )
    args = parser.parse_args()
    targets = []
    if args.database in ("sqlite", "both"):
        folder = Path(tempfile.mkdtemp())
        targets.append(("sqlite", f"sqlite:///{folder / 'bench.sqlite'}"))
    if args.database in ("postgresql", "both"):
        url = os.environ.get("IDP_TEST_POSTGRESQL_URL")
        if not url:
            sys.exit("set IDP_TEST_POSTGRESQL_URL for the PostgreSQL run")
        targets.append(("postgresql", url))
    for label, url in targets:
        run(label, url, args.n, args.threads, args.rounds)


if __name__ == "__main__":
    main()
