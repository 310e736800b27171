"""The floor under idMe's SSO: the fixed stack with nothing of idMe in it.

Issue 16 asks for 1.5x SimpleSAMLphp at 4 connections, on two waitress
processes over PostgreSQL, on this 2-core machine. This measures what the
stack the design fixes (waitress, Pyramid with pyramid_retry and pyramid_tm,
SQLAlchemy with zope.sqlalchemy, PostgreSQL through psycopg, RSA through
``cryptography``) costs per request *before* any of idMe's own work, served
exactly like ``bench_http_sso.py``'s PostgreSQL pair (two waitress processes
with ``development.ini``'s ``[server:main]`` and ``--threads`` threads, the
same Python client, connection *i* to process *i mod 2*), one layer added
at a time:

1. ``waitress``: a bare WSGI callable answering a page of the size of
   idMe's HTTP-POST page (a ~10 KB form with a SAMLResponse field);
2. ``+ Pyramid``: one route and one view returning that page, under
   pyramid_retry and pyramid_tm (``explicit_manager``, as idMe runs every
   request) and the query parsed by WebOb;
3. ``+ PostgreSQL``: the statements of idMe's repeat SSO in shape, on a
   session joined to the request's transaction with zope.sqlalchemy: two
   one-row SELECTs on indexed tables (the session, the SP) and a third
   that also writes a fresh request ID (a ``WITH ... INSERT ... ON
   CONFLICT DO NOTHING RETURNING``, as idMe's role gate writes the replay
   record), then COMMIT (psycopg sends BEGIN first, as for idMe);
4. ``+ RSA``: two RSA-2048 PKCS#1 v1.5 SHA-256 signatures over the page's
   bytes (what the two XML signatures cost in RSA alone, no c14n).

Layer 4 is everything an SSO must do at the least with this stack, and
none of what idMe does for it (sessions, the AuthnRequest's checks, the
role gate's logic, the Response's XML): its rate is a ceiling for idMe on
this machine. With ``--peer simplesamlphp`` the same run measures
SimpleSAMLphp first (``bench/peers/simplesamlphp/setup.sh``) and prints
each layer as a ratio to it.

Usage::

    .venv/bin/python bench/bench_stack_floor.py --postgresql-url URL \\
        [--peer simplesamlphp] [--seconds 15] [--runs 3] \\
        [--connections 1 4] [--threads 2] [--nodes 2]

The database given gets one table of its own (``stack_floor_*``), dropped
at the end. Not a test; results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench_http_sso as http_bench  # noqa: E402

LAYERS = ("waitress", "+ Pyramid", "+ PostgreSQL", "+ RSA")
TABLES = ("stack_floor_a", "stack_floor_b", "stack_floor_c", "stack_floor_seen")
# The page: idMe's POST page is about 10 KB, most of it the SAMLResponse.
PAGE = (
    b'<!DOCTYPE html><html lang="ms"><head><meta charset="utf-8">'
    b"<title>Meneruskan</title></head><body>"
    b'<form method="post" action="https://sp.example.org/acs">'
    b'<input type="hidden" name="SAMLResponse" value="'
    + b"QUJD"
    * 2300
    + b'"><input type="hidden" name="RelayState" value="/kelas/5-bestari">'
    b'<button type="submit">Teruskan</button></form></body></html>'
)


# --------------------------------------------------------------------------
# The served side (a child process per node)


def bare_app(environ, start_response):
    environ.get("QUERY_STRING", "")
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/html; charset=UTF-8"),
            ("Content-Length", str(len(PAGE))),
        ],
    )
    return [PAGE]


def pyramid_app(layer: int, url: str):
    """Layers 2-4: Pyramid, pyramid_retry, pyramid_tm; then the SQL; then RSA."""
    import zope.sqlalchemy
    from pyramid.config import Configurator
    from pyramid.response import Response
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import sessionmaker

    settings = {
        "tm.manager_hook": "pyramid_tm.explicit_manager",
        "tm.annotate_user": "false",
        "retry.attempts": "3",
    }
    config = Configurator(settings=settings)
    config.include("pyramid_retry")
    config.include("pyramid_tm")
    # The table names are this module's constants (TABLES), never input.
    reads = [
        text(f"SELECT id, value FROM {table} WHERE id = :id")  # noqa: S608
        for table in TABLES[:2]
    ]
    reads.append(
        text(
            f"WITH seen AS (INSERT INTO {TABLES[3]} (id, expires_at)"  # noqa: S608
            " VALUES (:seen, now()) ON CONFLICT DO NOTHING RETURNING id)"
            f" SELECT id, value, (SELECT count(*) FROM seen) FROM {TABLES[2]}"
            " WHERE id = :id"
        )
    )
    if layer >= 3:
        engine = create_engine(url, pool_size=10)
        factory = sessionmaker(bind=engine)

        def dbsession(request):
            session = factory()
            zope.sqlalchemy.register(session, transaction_manager=request.tm)
            return session

        config.add_request_method(dbsession, reify=True)
    if layer >= 4:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signed = PAGE[:4096]

    def view(request):
        request.GET.get("SAMLRequest")
        if layer >= 3:
            session = request.dbsession
            parameters = {"id": 1, "seen": secrets.token_hex(16)}
            for statement in reads:
                session.execute(statement, parameters).first()
            # A write the ORM did not see: committed, not rolled back (as
            # idMe's plain statements mark theirs, idp.db.PlainSql).
            zope.sqlalchemy.mark_changed(session, request.tm)
        if layer >= 4:
            for _ in range(2):
                key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
        return Response(PAGE, content_type="text/html")

    config.add_route("sso", "/saml/sso/redirect")
    config.add_view(view, route_name="sso")
    return config.make_wsgi_app()


def serve_main(argv: list[str]) -> None:
    layer, url, port, threads = int(argv[0]), argv[1], int(argv[2]), argv[3]
    app = bare_app if layer == 1 else pyramid_app(layer, url)
    http_bench.serve_app(app, port, threads)


# --------------------------------------------------------------------------
# The measuring side


def prepare_tables(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        for table in TABLES[:3]:
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
            conn.execute(
                text(f"CREATE TABLE {table} (id integer PRIMARY KEY, value text)")
            )
            conn.execute(
                text(
                    f"INSERT INTO {table} SELECT g, md5(g::text)"  # noqa: S608
                    " FROM generate_series(1, 1000) g"
                )
            )
        conn.execute(text(f"DROP TABLE IF EXISTS {TABLES[3]}"))
        conn.execute(
            text(
                f"CREATE TABLE {TABLES[3]} (id text PRIMARY KEY,"
                " expires_at timestamptz NOT NULL)"
            )
        )
    engine.dispose()


def drop_tables(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()


class Nodes(http_bench.Servers):
    """The layer's waitress processes; stopped as bench_http_sso's servers are."""

    def __init__(self, layer: int, url: str, count: int, threads: int, folder: Path):
        self.ports = [http_bench.free_port() for _ in range(count)]
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--serve",
                    str(layer),
                    url,
                    str(port),
                    str(threads),
                ],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}"},
                stdout=subprocess.DEVNULL,
                stderr=open(folder / f"node-{layer}-{port}.log", "wb"),  # noqa: SIM115
            )
            for port in self.ports
        ]
        for port, proc in zip(self.ports, self.procs, strict=True):
            http_bench.wait_for_port(port, proc)


def layer_cells(layer: int, args, folder: Path) -> list:
    nodes = Nodes(layer, args.postgresql_url, args.nodes, args.threads, folder)
    try:
        label = f"{layer}. {' '.join(LAYERS[:layer])}"
        target = http_bench.Target(
            label,
            nodes.ports,
            http_bench.TEST_HOST,
            "/saml/sso/redirect",
            ["bench=1"],
            http_bench.idme_query,
            None,
            nodes.pids,
        )
        if layer >= 3:
            target.database_pids = lambda: http_bench.processes("postgres")
        cells = []
        for connections in args.connections:
            cell = http_bench.run_cell(target, connections, args)
            print(cell.line(), flush=True)
            if cell.first_error:
                print(f"    first error: {cell.first_error}", flush=True)
            cells.append(cell)
        return cells
    finally:
        nodes.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--postgresql-url", default=os.environ.get("IDP_TEST_POSTGRESQL_URL")
    )
    parser.add_argument("--peer", choices=["simplesamlphp"])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=2)
    args = parser.parse_args()
    if not args.postgresql_url:
        parser.error("give --postgresql-url or set IDP_TEST_POSTGRESQL_URL")
    if args.seconds <= 0 or args.runs < 1 or min(args.connections) < 1:
        parser.error("--seconds, --runs and --connections must be positive")
    if args.nodes < 1 or args.threads < 1:
        parser.error("--nodes and --threads must be positive")
    # What run_cell expects of bench_http_sso's options: nothing is verified
    # here (the page is not a SAML Response).
    args.expected = 1500.0
    args.sample = 10**9
    # SimpleSAMLphp's sessions: one per connection, as bench_http_sso.py
    # gives it (PHP locks a session's file for a whole request).
    args.sessions = max(args.connections)
    print(f"uptime: {http_bench.uptime()}")
    print(
        f"{os.cpu_count()} cores; {args.runs} x {args.seconds:g} s per cell; "
        f"{args.nodes} waitress processes x {args.threads} threads",
        flush=True,
    )
    folder = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    cells = []
    if args.peer == "simplesamlphp":
        cells += http_bench.peer_cells(args)
    prepare_tables(args.postgresql_url)
    try:
        for layer in range(1, len(LAYERS) + 1):
            cells += layer_cells(layer, args, folder)
            time.sleep(1)
    finally:
        drop_tables(args.postgresql_url)
    print(f"uptime: {http_bench.uptime()}\n")
    by_label: dict[str, dict[int, object]] = {}
    for cell in cells:
        by_label.setdefault(cell.label, {})[cell.connections] = cell
    peer = next(
        (row for label, row in by_label.items() if "SimpleSAMLphp" in label), None
    )
    print(
        "| | "
        + " | ".join(f"req/s, {c} conn." for c in args.connections)
        + " | CPU per request, "
        + f"{max(args.connections)} conn. (ms: server + PostgreSQL + client) |"
    )
    print("|---|" + "---:|" * (len(args.connections) + 1))
    for label, row in by_label.items():
        parts = []
        for c in args.connections:
            cell = row.get(c)
            if cell is None:
                parts.append("-")
                continue
            rate = statistics.median(cell.rates)
            ratio = ""
            if peer is not None and c in peer and "SimpleSAMLphp" not in label:
                ratio = f" ({rate / statistics.median(peer[c].rates):.2f}x)"
            parts.append(f"{rate:.0f}{ratio}")
        top = row[max(row)]
        rate = statistics.median(top.rates)
        cores = [
            statistics.median(top.server_cores),
            statistics.median(top.database_cores) if top.database_cores else 0.0,
            statistics.median(top.client_cores),
        ]
        per = " + ".join(f"{c / rate * 1000:.2f}" for c in cores)
        print(f"| {label} | " + " | ".join(parts) + f" | {per} |")


if __name__ == "__main__":
    main()
