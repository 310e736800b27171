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
   bytes (what the two XML signatures cost in RSA alone, no c14n);
5. ``+ SAML XML`` (in place of layer 4's RSA over the page): the SAML work
   no IdP can skip, done with nothing but lxml, zlib and ``cryptography``
   calls: the AuthnRequest base64-decoded, inflated and parsed (its ID and
   ACS read); a success Response parsed from idMe's own template for the
   benchmark's SP (``idp.saml.response.success_template``, built once at
   start: four attributes, both signatures) and filled (IDs, times,
   addresses, the NameID, the values); both enveloped signatures (exclusive
   c14n, SHA-256 digest, RSA-2048 over the SignedInfo's c14n); one
   serialisation, base64 into the page.

Layer 4 is everything an SSO must do at the least with this stack, and
none of what idMe does for it (sessions, the AuthnRequest's checks, the
role gate's logic, the Response's XML): its rate is a ceiling for idMe on
this machine. Layer 5 adds the XML an SSO cannot go without, still with
none of idMe's checks or logic. With ``--peer simplesamlphp`` the same run
measures SimpleSAMLphp first (``bench/peers/simplesamlphp/setup.sh``) and
prints each layer as a ratio to it.

``--one-statement`` gives layers 3-5 the database at its least: the three
statements joined into one (the same tables and the same write), on a
connection in autocommit, so a request is one round trip with no BEGIN and
no COMMIT. (idMe needs a transaction for its writes; this is the bound
below any shape of its statements.)

Usage::

    .venv/bin/python bench/bench_stack_floor.py --postgresql-url URL \\
        [--peer simplesamlphp] [--seconds 15] [--runs 3] \\
        [--connections 1 4] [--threads 2] [--nodes 2] \\
        [--layers 1 2 3 4 5] [--one-statement]

The database given gets one table of its own (``stack_floor_*``), dropped
at the end. Not a test; results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench_http_sso as http_bench  # noqa: E402

LAYERS = ("waitress", "+ Pyramid", "+ PostgreSQL", "+ RSA", "+ SAML XML")
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


def pyramid_app(layer: int, url: str, one_statement: bool = False):
    """Layers 2-5: Pyramid, pyramid_retry, pyramid_tm; the SQL; RSA; the XML."""
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
    if one_statement:
        reads = [
            text(
                f"WITH seen AS (INSERT INTO {TABLES[3]} (id, expires_at)"  # noqa: S608
                " VALUES (:seen, now()) ON CONFLICT DO NOTHING RETURNING id)"
                f" SELECT a.id, a.value, b.value, c.value,"
                f" (SELECT count(*) FROM seen) FROM {TABLES[0]} a"
                f" JOIN {TABLES[1]} b ON b.id = a.id"
                f" JOIN {TABLES[2]} c ON c.id = a.id WHERE a.id = :id"
            )
        ]
    if layer >= 3:
        engine = create_engine(
            url, pool_size=10, isolation_level="AUTOCOMMIT" if one_statement else None
        )
        factory = sessionmaker(bind=engine)

        def dbsession(request):
            session = factory()
            zope.sqlalchemy.register(session, transaction_manager=request.tm)
            return session

        config.add_request_method(dbsession, reify=True)
    if layer >= 4:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        from idp.saml.keys import make_pem_pair

        key_pem, cert_pem = make_pem_pair(http_bench.TEST_HOST, key_size=2048)
        key = load_pem_private_key(key_pem, None)
        signed = PAGE[:4096]
    if layer >= 5:
        saml = SamlXml(key, cert_pem.decode())

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
        if layer >= 5:
            return Response(
                saml.page(request.GET["SAMLRequest"]), content_type="text/html"
            )
        if layer >= 4:
            for _ in range(2):
                key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
        return Response(PAGE, content_type="text/html")

    config.add_route("sso", "/saml/sso/redirect")
    config.add_view(view, route_name="sso")
    return config.make_wsgi_app()


class SamlXml:
    """Layer 5: an SSO's SAML XML with lxml, zlib and RSA calls, nothing else."""

    def __init__(self, key, certificate: str) -> None:
        from lxml import etree

        from bench.bench_sso import RELEASED
        from idp.saml.response import Shape, success_template

        self.certificate = certificate
        self.template = success_template(
            Shape(
                issuer=f"https://{http_bench.TEST_HOST}/saml/metadata",
                certificate=certificate,
                audience=http_bench.SP_ENTITY_ID,
                name_id_format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
                attributes=tuple(RELEASED),
                sign_response=True,
                sign_assertion=True,
            )
        )
        self.key = key
        self.etree = etree
        self.parser = etree.XMLParser(resolve_entities=False, no_network=True)

    def _sign(self, element) -> None:
        import hashlib

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        signature = element[1]
        signed_info = signature[0]
        signed_info[2].set("URI", "#" + element.get("ID"))
        element.remove(signature)
        canonical = self.etree.tostring(element, method="c14n", exclusive=True)
        element.insert(1, signature)
        digest = hashlib.sha256(canonical).digest()
        signed_info[2][2].text = base64.b64encode(digest).decode()
        value = self.key.sign(
            self.etree.tostring(signed_info, method="c14n", exclusive=True),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        signature[1].text = base64.b64encode(value).decode()

    def page(self, saml_request: str) -> bytes:
        authn = self.etree.fromstring(
            zlib.decompress(base64.b64decode(saml_request), -15), self.parser
        )
        request_id = authn.get("ID")
        acs = authn.get("AssertionConsumerServiceURL")
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 300))
        root = self.etree.fromstring(self.template, self.parser)
        root.set("ID", "_" + secrets.token_hex(16))
        root.set("InResponseTo", request_id)
        root.set("IssueInstant", issued)
        root.set("Destination", acs)
        assertion = root[3]
        assertion.set("ID", "_" + secrets.token_hex(16))
        assertion.set("IssueInstant", issued)
        subject, conditions, statement, attributes = assertion[2:6]
        subject[0].text = "3b1c6f0e9d2a4c57a8e1f04b6d9c2e71"
        data = subject[1][0]
        data.set("NotOnOrAfter", until)
        data.set("Recipient", acs)
        data.set("InResponseTo", request_id)
        conditions.set("NotBefore", issued)
        conditions.set("NotOnOrAfter", until)
        statement.set("AuthnInstant", issued)
        statement.set("SessionIndex", "_" + secrets.token_hex(16))
        statement[0][0].text = "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"
        for attribute, value in zip(
            attributes,
            ("900101145678", "Siti Aminah", "siti@example.my", "guru"),
            strict=True,
        ):
            attribute[0].text = value
        self._sign(assertion)
        self._sign(root)
        encoded = base64.b64encode(self.etree.tostring(root, encoding="UTF-8"))
        return b"".join(
            (
                b'<!DOCTYPE html><html lang="ms"><head><meta charset="utf-8">'
                b"<title>Meneruskan</title></head><body>"
                b'<form method="post" action="',
                html.escape(acs).encode(),
                b'"><input type="hidden" name="SAMLResponse" value="',
                encoded,
                b'"><button type="submit">Teruskan</button></form></body></html>',
            )
        )


def serve_main(argv: list[str]) -> None:
    layer, url, port, threads = int(argv[0]), argv[1], int(argv[2]), argv[3]
    one_statement = argv[4:] == ["one"]
    app = bare_app if layer == 1 else pyramid_app(layer, url, one_statement)
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

    def __init__(self, layer: int, args, folder: Path):
        url, count, threads = args.postgresql_url, args.nodes, args.threads
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
                    *(["one"] if args.one_statement else []),
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
    nodes = Nodes(layer, args, folder)
    try:
        label = f"{layer}. {' '.join(LAYERS[:layer])}"
        if layer == 5:
            label = f"5. {' '.join(LAYERS[:3])} {LAYERS[4]}"
        if layer >= 3 and args.one_statement:
            label += " (one statement, autocommit)"
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
    parser.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=list(range(1, len(LAYERS) + 1)),
        choices=range(1, len(LAYERS) + 1),
    )
    parser.add_argument(
        "--one-statement",
        action="store_true",
        help="layers 3-5: one statement in autocommit (no BEGIN, no COMMIT)",
    )
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
        for layer in args.layers:
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
