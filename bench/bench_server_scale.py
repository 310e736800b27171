"""A node with 10 SPs against one with 10,000: start, memory, SSO, a change.

Issue 14's target: a node with 10,000 registered SPs starts in under 2.8 s
and under +99 MB over a node with 10 SPs, and SSO for the last SP is within
10 % of the 10-SP case. This script measures, per database (SQLite, and
PostgreSQL when a URL is given) and per population (10 and 10,000 SPs):

* **start**: a fresh Python process (``python bench/bench_server_scale.py
  --child start ...``) imports the app, builds it (``idp.config.configure``,
  the WSGI app called in-process as waitress would, no network), and answers
  one SSO for the last SP registered: wall time from just before the
  parent spawns the process to that first answer, and the CPU time the
  process used until then (steadier than wall time on a shared machine);
* **RSS**: the child's resident memory (``VmRSS``) once the app is built,
  and after that first SSO (when the SAML server has loaded what it loads);
* **first SSO**: that first request alone;
* **a change**: one SP's metadata replaced (committed by another
  connection, as ``idp-admin sp import --replace`` on another node would):
  the next SSO for that SP (the node notices the new generation, forgets
  or rebuilds, and loads), and the next SSO for an unchanged SP;
* each start runs ``--starts`` times (3), the populations taking turns,
  and every figure above is the median of those runs;
* **steady SSO**: in another fresh process, both populations' apps side by
  side, the last SP of each, taking turns in blocks (this VM drifts by
  10-20 % from minute to minute; alternating spreads that over both), after
  a warm-up, in alternating order; median and mean latency, wall and the
  thread's CPU time (which other processes on the machine disturb less;
  for PostgreSQL it leaves out the server's share).

Every SSO is a signed-in user following an SP's link: an unsigned
AuthnRequest over HTTP-Redirect with a fresh ID, answered by the HTTP-POST
page with a signed Response, as ``bench/bench_sso.py`` times it (its
``Caller``). The user signs in once, in the parent; the session row is in
the database, so every child uses the same cookie.

The SPs are stored as ``idp.saml.registry.import_sp`` stores them, in bulk
(``tests/sp_population.py``): one document each (own entity ID, endpoints,
logo), certificates from a pool of 4 keys, all in the user's module.

``--before DIR`` also runs the children against another copy of the code
(``git archive <commit> idp | tar -x -C DIR``), for before/after figures.

Usage::

    .venv/bin/python bench/bench_server_scale.py [--database sqlite|postgresql|both]
        [--sps 10,10000] [--starts 3] [-n 800] [--blocks 40] [--before DIR]
        [--postgresql-url URL]

PostgreSQL comes from ``--postgresql-url`` or ``IDP_TEST_POSTGRESQL_URL``;
one database per population is made next to it (``<name>_scale_<N>``) and
rebuilt, so the URL's own database is never touched. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _code_path() -> str:
    """Where the child imports ``idp`` from: ``--code DIR``, else this tree."""
    if "--code" in sys.argv:
        return sys.argv[sys.argv.index("--code") + 1]
    return str(ROOT)


# The code under test first; this tree after it for ``tests`` and ``bench``.
# ``idp`` is imported now, before bench_sso puts this tree first on the path.
sys.path[:0] = [_code_path(), str(ROOT)]
import idp  # noqa: E402

assert Path(idp.__file__).is_relative_to(_code_path()), idp.__file__

KEY_SIZE = 3072  # the production default of idp.key_size


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def settings_for(url: str, folder: Path) -> dict:
    from tests.app import base_settings

    settings = base_settings(folder)
    settings.update({"idp.key_size": str(KEY_SIZE), "sqlalchemy.url": url})
    return settings


def app_for(url: str, folder: Path):
    from idp.config import configure
    from idp.db import make_engine

    settings = settings_for(url, folder)
    engine = make_engine(settings)
    settings["idp.dbengine"] = engine
    return configure(settings).make_wsgi_app(), engine


def sso_query(entity_id: str) -> str:
    from tests.saml_requests import authn_request, redirect_query

    acs = entity_id.rsplit("/", 1)[0] + "/acs"
    xml = authn_request(issuer=entity_id, acs_url=acs)
    return redirect_query(xml, relay_state="/kelas/5-bestari")


def last_sp(count: int) -> str:
    from tests.sp_population import entity_id

    return entity_id(count - 1)


# --------------------------------------------------------------------------
# Children: one process per measurement, importing the code under test


def child_start(args) -> dict:
    started = time.time()
    from bench.bench_sso import Caller

    folder = Path(args.folder)
    app, engine = app_for(args.url, folder)
    built = time.time()
    rss_built = rss_mb()
    call = Caller(app, args.cookie)
    last = last_sp(args.count)
    call(sso_query(last))
    answered = time.time()
    cpu = time.process_time()  # this process's CPU since it began
    rss_answered = rss_mb()
    # Another node replaces one SP's metadata: the last one, then the next
    # request for it and for another SP.
    replace_one(engine, last, args.change)
    start = time.perf_counter()
    call(sso_query(last))
    changed_sso = time.perf_counter() - start
    other = last_sp(args.count - 1) if args.count > 1 else last
    start = time.perf_counter()
    call(sso_query(other))
    other_first = time.perf_counter() - start
    start = time.perf_counter()
    call(sso_query(other))
    other_again = time.perf_counter() - start
    engine.dispose()
    return {
        "spawned_to_answer": answered - args.spawned,
        "python_to_answer": answered - started,
        "python_to_built": built - started,
        "cpu_to_answer": cpu,
        "first_sso": answered - built,
        "rss_built": rss_built,
        "rss_answered": rss_answered,
        "sso_after_change": changed_sso,
        "sso_other_sp_after_change": other_first,
        "sso_other_sp_again": other_again,
    }


def replace_one(engine, entity_id: str, serial: int) -> None:
    """Replace ``entity_id``'s metadata (a new ACS) in its own transaction."""
    from sqlalchemy.orm import Session

    from idp.saml.registry import find_sp, import_sp

    with Session(engine) as session, session.begin():
        xml = find_sp(session, entity_id).metadata_xml
        base = entity_id.rsplit("/", 1)[0]
        # A second ACS at index 1; the first, which requests name, stays.
        marker = "</md:AssertionConsumerService>"
        if marker not in xml:
            marker = "/>"
            position = xml.index("AssertionConsumerService")
            end = xml.index(marker, position) + len(marker)
        else:
            end = xml.index(marker) + len(marker)
        extra = (
            '<md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:'
            f'bindings:HTTP-POST" Location="{base}/acs-{serial}"'
            f' index="{100 + serial}"/>'
        )
        import_sp(session, (xml[:end] + extra + xml[end:]).encode(), replace=True)


def child_steady(args) -> dict:
    from bench.bench_sso import Caller

    folder = Path(args.folder)
    rows = []
    for url, count, cookie in zip(
        args.urls.split(","),
        args.counts.split(","),
        args.cookies.split(","),
        strict=True,
    ):
        app, _engine = app_for(url, folder)
        rows.append((int(count), Caller(app, cookie), last_sp(int(count))))
    for _count, call, entity_id in rows:
        for _ in range(args.warmup):
            call(sso_query(entity_id))
    walls: dict[int, list[float]] = {count: [] for count, _, _ in rows}
    cpus: dict[int, list[float]] = {count: [] for count, _, _ in rows}
    size = -(-args.n // args.blocks)
    done = 0
    while done < args.n:
        batch = min(size, args.n - done)
        # The populations take turns, in alternating order.
        for count, call, entity_id in rows if done // size % 2 == 0 else rows[::-1]:
            queries = [sso_query(entity_id) for _ in range(batch)]
            for query in queries:
                wall, cpu = time.perf_counter(), time.thread_time()
                call(query)
                cpus[count].append(time.thread_time() - cpu)
                walls[count].append(time.perf_counter() - wall)
        done += batch
    return {
        str(count): {
            "median_ms": statistics.median(walls[count]) * 1000,
            "mean_ms": statistics.fmean(walls[count]) * 1000,
            "cpu_median_ms": statistics.median(cpus[count]) * 1000,
            "cpu_mean_ms": statistics.fmean(cpus[count]) * 1000,
            "n": len(walls[count]),
        }
        for count, _, _ in rows
    }


# --------------------------------------------------------------------------
# The parent: databases, the user, and the children


def database_url(kind: str, count: int, folder: Path, pg_url: str | None) -> str:
    if kind == "sqlite":
        return f"sqlite:///{folder / f'scale-{count}.sqlite'}"
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(pg_url)
    name = f"{base.database}_scale_{count}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def populate(url: str, count: int) -> float:
    """Schema, a module and role, ``count`` SPs in it, the user; seconds taken."""
    from alembic import command
    from sqlalchemy.orm import Session

    from bench.bench_sso import bench_user
    from idp.db import make_engine
    from idp.migrations import alembic_config
    from idp.models import Module, Role
    from tests.sp_population import register_many

    engine = make_engine({"sqlalchemy.url": url})
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    started = time.perf_counter()
    with Session(engine) as session, session.begin():
        module = Module(code="emis", display_name_ms="EMIS", display_name_en="EMIS")
        role = Role(name="guru", display_name_ms="Guru", display_name_en="Teacher")
        role.modules.append(module)
        session.add_all([module, role])
        session.flush()
        register_many(session, count, module_id=module.id)
        session.add(bench_user(role))
    engine.dispose()
    return time.perf_counter() - started


def signed_in_cookie(url: str, folder: Path) -> str:
    from bench.bench_sso import sign_in

    app, engine = app_for(url, folder)
    try:
        return sign_in(app)
    finally:
        engine.dispose()


def run_child(mode: str, code: str, **options) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode]
    command += ["--code", code]  # read by _code_path() as two words
    for key, value in options.items():
        # --key=value: a cookie may begin with "-"
        command.append(f"--{key.replace('_', '-')}={value}")
    spawned = time.time()
    if mode == "start":
        command += ["--spawned", repr(spawned)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict]) -> dict:
    """Each figure's median over several starts."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def report(kind: str, label: str, counts: list[int], starts: dict, steady: dict):
    print(f"\n{kind}, {label}")
    print(
        f"{'SPs':>6} {'spawn→1st SSO':>14} {'CPU':>6} {'1st SSO':>9}"
        f" {'RSS built':>10} {'RSS 1st SSO':>12} {'after change':>13}"
        f" {'other SP':>9} {'steady p50':>11} {'mean':>8} {'CPU p50':>8} {'mean':>8}"
    )
    for count in counts:
        s, t = starts[count], steady[str(count)]
        print(
            f"{count:>6} {s['spawned_to_answer']:>13.2f}s"
            f" {s['cpu_to_answer']:>5.2f}s {s['first_sso'] * 1000:>7.0f}ms"
            f" {s['rss_built']:>8.0f}MB {s['rss_answered']:>10.0f}MB"
            f" {s['sso_after_change'] * 1000:>11.0f}ms"
            f" {s['sso_other_sp_after_change'] * 1000:>7.0f}ms"
            f" {t['median_ms']:>9.2f}ms {t['mean_ms']:>6.2f}ms"
            f" {t['cpu_median_ms']:>6.2f}ms {t['cpu_mean_ms']:>6.2f}ms"
        )
    if len(counts) == 2:
        small, large = counts
        a, b = starts[small], starts[large]
        ta, tb = steady[str(small)], steady[str(large)]
        start = b["spawned_to_answer"] - a["spawned_to_answer"]
        cpu = b["cpu_to_answer"] - a["cpu_to_answer"]
        memory = b["rss_answered"] - a["rss_answered"]
        median = 100 * (tb["median_ms"] / ta["median_ms"] - 1)
        mean = 100 * (tb["mean_ms"] / ta["mean_ms"] - 1)
        cpu_median = 100 * (tb["cpu_median_ms"] / ta["cpu_median_ms"] - 1)
        print(
            f"  {large} vs {small}: start {start:+.2f} s (CPU {cpu:+.2f} s),"
            f" RSS {memory:+.0f} MB,"
            f" steady SSO {median:+.1f} % (median) {mean:+.1f} % (mean),"
            f" CPU {cpu_median:+.1f} % (median)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", choices=("start", "steady"))
    parser.add_argument("--code", default=str(ROOT))
    parser.add_argument("--folder")
    parser.add_argument("--url")
    parser.add_argument("--urls")
    parser.add_argument("--count", type=int)
    parser.add_argument("--counts")
    parser.add_argument("--cookie")
    parser.add_argument("--cookies")
    parser.add_argument("--change", type=int, default=1)
    parser.add_argument("--spawned", type=float)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("-n", "--n", type=int, default=800)
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"))
    parser.add_argument("--sps", default="10,10000")
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--before")
    parser.add_argument(
        "--postgresql-url", default=os.environ.get("IDP_TEST_POSTGRESQL_URL")
    )
    args = parser.parse_args()
    if args.child == "start":
        print(json.dumps(child_start(args)))
        return
    if args.child == "steady":
        print(json.dumps(child_steady(args)))
        return

    database = args.database or ("both" if args.postgresql_url else "sqlite")
    kinds = ["sqlite", "postgresql"] if database == "both" else [database]
    if "postgresql" in kinds and not args.postgresql_url:
        raise SystemExit("PostgreSQL needs --postgresql-url or IDP_TEST_POSTGRESQL_URL")
    counts = [int(value) for value in args.sps.split(",")]
    codes = [("this tree", str(ROOT))]
    if args.before:
        codes.insert(0, (f"before ({args.before})", args.before))

    from idp.saml import keys as keystore
    from tests.app import TEST_HOST

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        folder = Path(tmp)
        keystore.generate(folder / "certs", TEST_HOST, key_size=KEY_SIZE)
        changes = 0
        for kind in kinds:
            urls, cookies = {}, {}
            for count in counts:
                urls[count] = database_url(kind, count, folder, args.postgresql_url)
                seconds = populate(urls[count], count)
                cookies[count] = signed_in_cookie(urls[count], folder)
                print(f"{kind}: {count} SPs stored in {seconds:.1f} s", flush=True)
            for label, code in codes:
                runs: dict[int, list[dict]] = {count: [] for count in counts}
                for _ in range(args.starts):  # the populations take turns
                    for count in counts:
                        changes += 1  # each replacement adds an ACS of its own
                        runs[count].append(
                            run_child(
                                "start",
                                code,
                                folder=folder,
                                url=urls[count],
                                count=count,
                                cookie=cookies[count],
                                change=changes,
                            )
                        )
                starts = {count: median_of(runs[count]) for count in counts}
                steady = run_child(
                    "steady",
                    code,
                    folder=folder,
                    urls=",".join(urls[c] for c in counts),
                    counts=",".join(str(c) for c in counts),
                    cookies=",".join(cookies[c] for c in counts),
                    n=args.n,
                    blocks=args.blocks,
                    warmup=args.warmup,
                )
                report(kind, label, counts, starts, steady)


if __name__ == "__main__":
    main()
