"""Single sign-on over real HTTP: idMe (and SimpleSAMLphp) under replayed AuthnRequests.

Issue 16's harness. What one SSO costs a user who is already signed in,
measured the way a browser reaches the IdP: over TCP on 127.0.0.1, through
waitress (the shipped ``[server:main]`` settings of ``development.ini``),
with a session obtained by walking the real sign-in pages (identifier,
security image, password: no database shortcut).

Targets, each started here and stopped at the end:

* ``idMe, SQLite``: one waitress process on a fresh SQLite file;
* ``idMe, PostgreSQL``: two waitress processes (two ports) on one fresh
  database. There is no balancer: the benchmark fans out itself, client
  connection *i* talks to port *i mod 2* for all of its requests (so one
  connection exercises one node, four connections two per node);
* ``SimpleSAMLphp`` (``--peer simplesamlphp``): the apache2 + mod_php IdP set
  up by ``bench/peers/simplesamlphp/setup.sh`` on port 8081, with the same
  SP metadata; its session comes from one walk through its login form.

One SP is registered (the same metadata everywhere). idMe signs with a
fresh RSA-2048 key for the comparison and, in a second pass, with the
production default RSA-3072 (``--key-sizes``).

The load: Python threads, one ``http.client`` keep-alive connection each
(``--connections 1 4``). Each request is a fresh Redirect AuthnRequest (new
ID, current IssueInstant), generated before the timed run so the client
does little more than send bytes and find the SAMLResponse in the page.
Why not ``wrk``: the client must carry a session cookie per connection,
fan out over two ports, keep every response for a verified sample and
record every latency; a Python client does it in one file with nothing to
install, and its own CPU is measured and printed (``client`` column, in
cores) so what it takes from the server on this 2-core machine is known.

Each (target, connections) cell runs ``--runs`` times for ``--seconds``
(15 s x 3 by default) and reports SSO/s (the median run), p50/p90/p99/max
over all runs, errors, and the server's RSS before and after. Every
``--sample``-th response is verified afterwards (outside the timing):
both XML signatures (Response and Assertion, RSA-SHA256, each referencing
its own element) against the IdP's certificate, Audience, InResponseTo
(Response and SubjectConfirmationData) and Destination.

``openssl speed rsa2048`` and ``rsa3072`` run in the same run, and the
table ends with the RSA limit: sign/s / 2 signatures per core.

Usage::

    .venv/bin/python bench/bench_http_sso.py [--database sqlite postgresql]
        [--postgresql-url URL] [--peer simplesamlphp] [--seconds 15]
        [--runs 3] [--connections 1 4] [--key-sizes 2048 3072]
        [--sessions 4] [--sample 50] [--profile-seconds 0]

PostgreSQL comes from ``--postgresql-url`` or ``IDP_TEST_POSTGRESQL_URL``;
its schema is dropped and rebuilt, so give it a database of its own.
``--profile-seconds S`` runs py-spy on the SQLite server for S seconds at
one connection and prints its flat profile ranked by share. Not a test.
"""

from __future__ import annotations

import argparse
import base64
import html
import http.client
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lxml import etree  # noqa: E402

from tests.saml_metadata import make_sp_metadata  # noqa: E402
from tests.saml_requests import authn_request, redirect_query  # noqa: E402

SP_ENTITY_ID = "https://sp.example.org/sp"
SP_ACS = "https://sp.example.org/acs"
TEST_HOST = "idp.test"
IDP_SSO = f"https://{TEST_HOST}/saml/sso/redirect"
PEER_PORT = 8081
PEER_BASE = f"http://127.0.0.1:{PEER_PORT}/simplesaml"
PEER_SSO = f"{PEER_BASE}/saml2/idp/SSOService.php"
PEER_USER, PEER_PASSWORD = "bench", "bench-password"
SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RESPONSE_FIELD = re.compile(rb'name="SAMLResponse"\s+value="([^"]+)"')
RELAY_STATE = "/kelas/5-bestari"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def processes(name: str) -> list[int]:
    """The pids of the running processes called ``name``."""
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                pids.append(int(comm.parent.name))
        except OSError:
            continue
    return pids


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------
# A tiny cookie-keeping HTTP client for the sign-in walks


class Browser:
    """One keep-alive connection to ``port`` that keeps cookies and follows nothing."""

    def __init__(self, port: int, host_header: str, scheme: str) -> None:
        self.port = port
        self.host_header = host_header
        self.origin = f"{scheme}://{host_header}"
        self.cookies: dict[str, str] = {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, target: str, form: dict | None = None):
        headers = {
            "Host": self.host_header,
            "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) bench_http_sso",
            "Accept-Language": "ms",
        }
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Origin"] = self.origin
        self.conn.request(method, target, body=body, headers=headers)
        answer = self.conn.getresponse()
        data = answer.read()
        for name, value in answer.getheaders():
            if name.lower() == "set-cookie":
                pair = value.split(";", 1)[0]
                key, _, val = pair.partition("=")
                if val and "max-age=0" not in value.lower():
                    self.cookies[key.strip()] = val.strip()
                else:
                    self.cookies.pop(key.strip(), None)
        return (
            answer.status,
            answer.getheader("Location"),
            data.decode("utf-8", "replace"),
        )


def csrf_token(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    if match is None:
        sys.exit("the sign-in page has no csrf_token field")
    return match.group(1)


def idme_sign_in(
    port: int, number: str, password: str, browser: Browser | None = None
) -> str:
    """Walk idMe's three sign-in pages over HTTP; return the session cookie.

    ``browser``: one whose connection is already chosen (e.g. TLS through a
    proxy, from a given source address); by default plain HTTP to ``port``.
    """
    browser = browser or Browser(port, TEST_HOST, "https")
    status, _, page = browser.request("GET", "/login")
    if status != 200:
        sys.exit(f"GET /login answered {status}")
    token = csrf_token(page)
    steps = [
        ("/login", {"csrf_token": token, "identifier": number}),
        ("/login/image", {"csrf_token": token, "confirm": "y"}),
        ("/login/password", {"csrf_token": token, "password": password}),
    ]
    for path, form in steps:
        status, location, page = browser.request("POST", path, form)
        if status != 303:
            sys.exit(f"POST {path} answered {status}, not 303: {page[:200]!r}")
        if location:
            target = urlsplit(location)
            status, _, page = browser.request(
                "GET", target.path + (f"?{target.query}" if target.query else "")
            )
            if status >= 400:
                sys.exit(f"GET {location} answered {status}")
            if "csrf_token" in page:
                token = csrf_token(page)
                for _, later in steps:
                    later["csrf_token"] = token
    cookie = browser.cookies.get("idp_session")
    if cookie is None:
        sys.exit("signed in, but no idp_session cookie was set")
    return f"idp_session={cookie}"


def peer_sign_in() -> str:
    """One walk through SimpleSAMLphp's login form; return its session cookies."""
    browser = Browser(PEER_PORT, f"127.0.0.1:{PEER_PORT}", "http")
    query = peer_query()
    status, location, page = browser.request(
        "GET", f"/simplesaml/saml2/idp/SSOService.php?{query}"
    )
    if status != 302 or not location or "AuthState" not in location:
        sys.exit(
            f"SimpleSAMLphp did not send to its login form ({status}): {page[:300]!r}"
        )
    target = urlsplit(location)
    status, _, page = browser.request("GET", f"{target.path}?{target.query}")
    state = re.search(r'name="AuthState" value="([^"]+)"', page)
    if status != 200 or state is None:
        sys.exit(f"SimpleSAMLphp's login form answered {status} without AuthState")
    form = {
        "username": PEER_USER,
        "password": PEER_PASSWORD,
        "AuthState": html.unescape(state.group(1)),
    }
    status, location, page = browser.request("POST", target.path, form)
    while status in (302, 303) and location:
        target = urlsplit(location)
        status, location, page = browser.request(
            "GET", target.path + (f"?{target.query}" if target.query else "")
        )
    if status != 200 or RESPONSE_FIELD.search(page.encode()) is None:
        sys.exit(f"SimpleSAMLphp sign-in ended in {status} without a SAMLResponse")
    return "; ".join(f"{k}={v}" for k, v in browser.cookies.items())


def idme_query() -> str:
    xml = authn_request(issuer=SP_ENTITY_ID, acs_url=SP_ACS, destination=IDP_SSO)
    return redirect_query(xml, relay_state=RELAY_STATE)


def peer_query() -> str:
    xml = authn_request(issuer=SP_ENTITY_ID, acs_url=SP_ACS, destination=PEER_SSO)
    return redirect_query(xml, relay_state=RELAY_STATE)


# --------------------------------------------------------------------------
# Verification of a sample


def request_id(query: str) -> str:
    import zlib
    from urllib.parse import parse_qs

    raw = base64.b64decode(parse_qs(query)["SAMLRequest"][0])
    xml = zlib.decompress(raw, -zlib.MAX_WBITS)
    return etree.fromstring(xml).get("ID")


def verify(encoded: bytes, query: str, cert_file: Path) -> None:
    """Both signatures against the IdP's certificate, Audience, InResponseTo...."""
    import xmlsec

    xml = base64.b64decode(html.unescape(encoded.decode()))
    root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False))
    wanted = request_id(query)
    status = root.find(f"{{{SAMLP}}}Status/{{{SAMLP}}}StatusCode").get("Value")
    assert status.endswith(":Success"), status
    assert root.get("Destination") == SP_ACS, root.get("Destination")
    assert root.get("InResponseTo") == wanted, "Response InResponseTo"
    assertions = root.findall(f"{{{SAML}}}Assertion")
    assert len(assertions) == 1, f"{len(assertions)} Assertions"
    assertion = assertions[0]
    audience = assertion.findtext(
        f"{{{SAML}}}Conditions/{{{SAML}}}AudienceRestriction/{{{SAML}}}Audience"
    )
    assert audience == SP_ENTITY_ID, f"Audience {audience}"
    confirmation = assertion.find(
        f"{{{SAML}}}Subject/{{{SAML}}}SubjectConfirmation/"
        f"{{{SAML}}}SubjectConfirmationData"
    )
    assert confirmation.get("InResponseTo") == wanted, "SubjectConfirmation"
    assert confirmation.get("Recipient") == SP_ACS, "Recipient"
    xmlsec.tree.add_ids(root, ["ID"])
    key = xmlsec.Key.from_file(str(cert_file), xmlsec.constants.KeyDataFormatCertPem)
    for element in (root, assertion):
        signatures = element.findall(f"{{{DS}}}Signature")
        assert len(signatures) == 1, f"{element.tag}: {len(signatures)} signatures"
        signature = signatures[0]
        method = signature.find(f"{{{DS}}}SignedInfo/{{{DS}}}SignatureMethod")
        assert method.get("Algorithm") == RSA_SHA256, method.get("Algorithm")
        references = signature.findall(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")
        assert len(references) == 1, "one Reference"
        assert references[0].get("URI") == "#" + element.get("ID"), "Reference URI"
        context = xmlsec.SignatureContext()
        context.key = key
        context.verify(signature)  # raises xmlsec.Error when it does not verify


# --------------------------------------------------------------------------
# The load


@dataclass
class Cell:
    label: str
    connections: int
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    client_cores: list[float] = field(default_factory=list)
    server_cores: list[float] = field(default_factory=list)
    database_cores: list[float] = field(default_factory=list)
    rss_before: float = 0.0
    rss_after: float = 0.0
    loads: list[str] = field(default_factory=list)
    verified: int = 0
    first_error: str = ""

    def line(self) -> str:
        ordered = sorted(self.latencies) or [float("nan")]
        return (
            f"{self.label:<34} {self.connections} conn  "
            f"{statistics.median(self.rates):7.1f} SSO/s "
            f"(runs {' '.join(f'{r:.0f}' for r in self.rates)})  "
            f"p50 {percentile(ordered, 0.5):6.2f}  "
            f"p90 {percentile(ordered, 0.9):6.2f}  "
            f"p99 {percentile(ordered, 0.99):6.2f}  max {ordered[-1]:7.2f} ms  "
            f"errors {self.errors}  verified {self.verified}  "
            f"RSS {self.rss_before:.0f}->{self.rss_after:.0f} MB  "
            f"server {statistics.median(self.server_cores):.2f} / "
            f"client {statistics.median(self.client_cores):.2f}"
            + (
                f" / postgres {statistics.median(self.database_cores):.2f}"
                if self.database_cores
                else ""
            )
            + " cores  "
            f"load {' | '.join(self.loads)}"
        )


class Target:
    """Where to send requests, with which cookie, and how to make a query."""

    def __init__(
        self, label, ports, host_header, path, cookies, make_query, cert, pids
    ):
        self.label = label
        self.ports = ports
        self.host_header = host_header
        self.path = path
        self.cookies = cookies  # one per connection, round robin
        self.make_query = make_query
        self.cert = cert
        self.pids = pids  # callable: the server's processes now
        self.database_pids = lambda: []  # callable: PostgreSQL's, if it is used


def worker(target, index, queries, deadline, latencies, samples, sample_every, errors):
    port = target.ports[index % len(target.ports)]
    cookie = target.cookies[index % len(target.cookies)]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {
        "Host": target.host_header,
        "Cookie": cookie,
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) bench_http_sso",
        "Accept-Language": "ms",
    }
    count = 0
    while time.perf_counter() < deadline:
        try:
            query = queries.pop()
        except IndexError:
            query = target.make_query()
        begun = time.perf_counter()
        try:
            conn.request("GET", f"{target.path}?{query}", headers=headers)
            answer = conn.getresponse()
            body = answer.read()
            elapsed = (time.perf_counter() - begun) * 1000
            match = RESPONSE_FIELD.search(body) if answer.status == 200 else None
            if match is None:
                errors.append(f"{answer.status}: {body[:200]!r}")
                continue
        except (OSError, http.client.HTTPException) as error:
            errors.append(f"{type(error).__name__}: {error}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        latencies.append(elapsed)
        count += 1
        if count % sample_every == 0:
            samples.append((match.group(1), query))
    conn.close()


def run_cell(target: Target, connections: int, args) -> Cell:
    cell = Cell(target.label, connections)
    # Warm up: every connection's path, the caches, the first GC cycles.
    warm_run(target, connections, min(2.0, args.seconds))
    cell.rss_before = rss_mb(target.pids())
    for _ in range(args.runs):
        pool = [target.make_query() for _ in range(int(args.seconds * args.expected))]
        per_thread = [pool[i::connections] for i in range(connections)]
        latencies: list[float] = []
        samples: list[tuple[bytes, str]] = []
        errors: list[str] = []
        pids = target.pids()
        server0, client0 = cpu_seconds(pids), own_cpu()
        database0 = cpu_seconds(target.database_pids())
        begun = time.perf_counter()
        deadline = begun + args.seconds
        threads = [
            threading.Thread(
                target=worker,
                args=(
                    target,
                    i,
                    per_thread[i],
                    deadline,
                    latencies,
                    samples,
                    args.sample,
                    errors,
                ),
            )
            for i in range(connections)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - begun
        cell.rates.append(len(latencies) / elapsed)
        cell.server_cores.append((cpu_seconds(target.pids()) - server0) / elapsed)
        cell.client_cores.append((own_cpu() - client0) / elapsed)
        if target.database_pids():
            database = cpu_seconds(target.database_pids()) - database0
            cell.database_cores.append(database / elapsed)
        cell.latencies.extend(latencies)
        cell.errors += len(errors)
        cell.first_error = cell.first_error or (errors[0] if errors else "")
        cell.loads.append(loadavg())
        for encoded, query in samples:
            try:
                verify(encoded, query, target.cert)
            except Exception as error:
                cell.errors += 1
                cell.first_error = cell.first_error or f"verification: {error!r}"
            else:
                cell.verified += 1
    cell.rss_after = rss_mb(target.pids())
    return cell


def soak(target: Target, connections: int, seconds: float) -> None:
    """A long run: RSS every 10 s, and every request over 100 ms, when it came."""
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds
    threads = [
        threading.Thread(
            target=worker,
            args=(target, i, [], deadline, latencies, [], 10**9, errors),
        )
        for i in range(connections)
    ]
    begun = time.perf_counter()
    rss = [(0.0, rss_mb(target.pids()))]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        time.sleep(min(10.0, max(0.0, deadline - time.perf_counter()) + 0.1))
        rss.append((time.perf_counter() - begun, rss_mb(target.pids())))
    for thread in threads:
        thread.join()
    ordered = sorted(latencies)
    slow = sum(1 for value in latencies if value > 100)
    first, last = rss[1][1], rss[-1][1]
    print(
        f"soak {target.label}, {connections} conn., {seconds:g} s: "
        f"{len(latencies)} SSOs ({len(latencies) / seconds:.0f}/s), "
        f"p50 {percentile(ordered, 0.5):.2f} p99 {percentile(ordered, 0.99):.2f} "
        f"max {ordered[-1]:.1f} ms, {slow} over 100 ms, {len(errors)} errors; "
        f"RSS {rss[0][1]:.0f} MB before, {first:.0f} after 10 s, {last:.0f} at the "
        f"end ({(last - first) / first * 100:+.1f} % after the first 10 s)",
        flush=True,
    )
    print(
        "    RSS MB every 10 s: " + " ".join(f"{mb:.0f}" for _, mb in rss), flush=True
    )


def warm_run(target: Target, connections: int, seconds: float) -> None:
    errors: list[str] = []
    deadline = time.perf_counter() + seconds
    threads = [
        threading.Thread(
            target=worker,
            args=(target, i, [], deadline, [], [], 10**9, errors),
        )
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        sys.exit(f"{target.label}: the warm-up failed: {errors[0]}")


# --------------------------------------------------------------------------
# idMe: the database, the servers


NUMBER = "080512140001"
PASSWORD = "kopi o kosong tanpa gula"  # noqa: S105 (a benchmark user's password)


def prepare_database(url: str, folder: Path, key_size: int, sessions: int) -> Path:
    """Schema, IdP key, the SP, a module/role and the user; returns the cert file."""
    from bench.bench_sso import fresh_database
    from idp.saml import keys as keystore

    engine = fresh_database(url)
    pair = keystore.generate(folder / "certs", TEST_HOST, key_size=key_size)
    seed(engine)
    engine.dispose()
    return Path(pair.cert_file)


def seed(engine) -> None:
    """The SP, a module and a role granting it, and the benchmark's user."""
    from sqlalchemy.orm import Session

    from bench.bench_sso import RELEASED, bench_user
    from idp.models import Module, Role
    from idp.saml.registry import import_sp

    with Session(engine) as session, session.begin():
        module = Module(code="emis", display_name_ms="EMIS", display_name_en="EMIS")
        role = Role(name="guru", display_name_ms="Guru", display_name_en="Teacher")
        role.modules.append(module)
        session.add_all([module, role])
        session.flush()
        sp = import_sp(session, make_sp_metadata(SP_ENTITY_ID), module_code="emis")
        sp.attributes_released = list(RELEASED)
        session.add(bench_user(role))


def serve_main(argv: list[str]) -> None:
    """Child: idMe behind waitress on one port (the shipped server settings)."""
    from bench.bench_server_scale import settings_for
    from idp.config import configure

    url, folder, port = argv[0], Path(argv[1]), int(argv[2])
    key_size, threads = argv[3], argv[4]
    settings = settings_for(url, folder)
    settings["idp.key_size"] = key_size
    app = configure(settings).make_wsgi_app()
    serve_app(app, port, None if threads == "-" else threads)


def serve_app(app, port: int, threads: str | None) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` as a node does: start-up frozen out
    of the collector's sight, ``development.ini``'s ``[server:main]``
    (``threads`` instead of its own, if given), https behind a proxy."""
    import waitress

    from idp import freeze_start_up
    from tests.served import server_settings

    freeze_start_up()  # as idp.main does once the app is built
    served = server_settings()
    if threads is not None:
        served["threads"] = threads
    waitress.serve(
        app,
        host="127.0.0.1",
        port=port,
        url_scheme="https",
        **{**served, "_quiet": True},
    )


class Servers:
    def __init__(
        self, url: str, folder: Path, key_size: int, count: int, threads: int | None
    ) -> None:
        self.ports = [free_port() for _ in range(count)]
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--serve",
                    url,
                    str(folder),
                    str(port),
                    str(key_size),
                    str(threads) if threads else "-",
                ],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.DEVNULL,
                stderr=open(folder / f"server-{port}.log", "wb"),  # noqa: SIM115
            )
            for port in self.ports
        ]
        for port, proc in zip(self.ports, self.procs, strict=True):
            wait_for_port(port, proc)

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_for_port(port: int, proc) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            sys.exit(f"the idMe server on port {port} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"the idMe server on port {port} did not start")


def idme_cells(kind: str, url: str, key_size: int, args) -> list[Cell]:
    folder = Path(tempfile.mkdtemp(prefix=f"bench-http-{kind}-"))
    if kind == "sqlite":
        url = f"sqlite:///{folder / 'idp.sqlite'}"
    from sqlalchemy.exc import SQLAlchemyError

    try:
        cert = prepare_database(url, folder, key_size, args.sessions)
    except SQLAlchemyError as error:
        shutil.rmtree(folder, ignore_errors=True)
        sys.exit(f"cannot prepare the {kind} database: {str(error).splitlines()[0]}")
    count = 1 if kind == "sqlite" else args.nodes
    servers = Servers(url, folder, key_size, count, args.threads)
    try:
        cookies = [
            idme_sign_in(servers.ports[i % count], NUMBER, PASSWORD)
            for i in range(args.sessions)
        ]
        shape = f"{args.threads} threads" if args.threads else "ini threads"
        label = (
            f"idMe, SQLite, 1 waitress ({shape}), RSA-{key_size}"
            if kind == "sqlite"
            else f"idMe, PostgreSQL, {count} waitress ({shape}), RSA-{key_size}"
        )
        target = Target(
            label,
            servers.ports,
            TEST_HOST,
            "/saml/sso/redirect",
            cookies,
            idme_query,
            cert,
            servers.pids,
        )
        if kind == "postgresql":
            # Every backend of the cluster: other users' work counts too.
            target.database_pids = lambda: processes("postgres")
        cells = []
        for connections in args.connections:
            cell = run_cell(target, connections, args)
            print(cell.line(), flush=True)
            if cell.first_error:
                print(f"    first error: {cell.first_error}", flush=True)
            cells.append(cell)
        if args.soak_seconds and key_size == args.key_sizes[0]:
            soak(target, max(args.connections), args.soak_seconds)
        if args.profile_seconds and kind == "sqlite" and key_size == 2048:
            profile(target, servers.pids()[0], args)
        return cells
    finally:
        servers.stop()
        shutil.rmtree(folder, ignore_errors=True)


# What each sample was doing. Two special cases first: a COMMIT anywhere in
# the stack, and the signatures (py-spy without --native shows C time on the
# Python line that called it: a leaf frame in crypto.py's sign methods, which
# call libxmlsec, or in the in-process signer's c14n and RSA calls).
# Otherwise the innermost frame whose file belongs to a known owner decides
# (the standard library's frames are passed over upwards).
SIGN_CALLS = (
    ".sign_element (",
    ".sign_statement (",
    ".sign_in_place (",
    "_sign_enveloped (",
    "_canonical (",
)
OWNERS = (
    ("idp/saml/crypto.py", "XML-DSig templates and key context around the signs"),
    ("xmlsec", "XML-DSig templates and key context around the signs"),
    ("sqlalchemy/", "SQLAlchemy: statements, ORM, pool, driver"),
    ("psycopg/", "SQLAlchemy: statements, ORM, pool, driver"),
    ("saml2/", "pysaml2: parsing, objects, to_string"),
    ("jinja2/", "the POST page (Jinja2 and its templates)"),
    ("markupsafe/", "the POST page (Jinja2 and its templates)"),
    ("templates/", "the POST page (Jinja2 and its templates)"),
    ("idp/jinja2.py", "the POST page (Jinja2 and its templates)"),
    ("idp/sessions.py", "sessions and security policy"),
    ("idp/security.py", "sessions and security policy"),
    ("idp/csrf.py", "sessions and security policy"),
    ("idp/authz.py", "sessions and security policy"),
    ("idp/csp.py", "sessions and security policy"),
    ("idp/saml/", "idMe's SAML code: request checks, response building (lxml)"),
    ("idp/", "idMe's views, tweens and the rest of idp/"),
    ("waitress/", "waitress, WebOb, Pyramid, pyramid_tm"),
    ("webob/", "waitress, WebOb, Pyramid, pyramid_tm"),
    ("pyramid", "waitress, WebOb, Pyramid, pyramid_tm"),
    ("transaction/", "waitress, WebOb, Pyramid, pyramid_tm"),
    ("zope/", "waitress, WebOb, Pyramid, pyramid_tm"),
)
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]+)(?::\d+)?\)$")


def category(frames: list[str]) -> str:
    if any(" (sqlalchemy/" in frame and "commit" in frame.lower() for frame in frames):
        return "database COMMIT (SQLite: fdatasync)"
    if (
        any(call in frames[-1] for call in SIGN_CALLS)
        and "idp/saml/crypto.py" in frames[-1]
    ):
        return "the two signatures (RSA, c14n, digests)"
    for frame in reversed(frames):
        match = FRAME.match(frame)
        if match is None:
            continue
        path = match["file"]
        for prefix, label in OWNERS:
            if path.startswith(prefix) or f"/{prefix}" in path:
                return label
    return "the standard library and the rest"


def rank(folded: Path, count: int) -> None:
    """py-spy's folded stacks, per category and per leaf function, by share."""
    shares: dict[str, int] = {}
    leaves: dict[str, int] = {}
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        number = int(samples)
        frames = stack.split(";")
        label = category(frames)
        shares[label] = shares.get(label, 0) + number
        leaves[frames[-1]] = leaves.get(frames[-1], 0) + number
        total += number
    if not total or not count:
        print("py-spy recorded nothing", flush=True)
        return
    print(f"py-spy: {total} samples over {count} SSOs", flush=True)
    print("| what | ms per SSO | share |")
    print("|---|---:|---:|")
    for label, number in sorted(shares.items(), key=lambda item: -item[1]):
        ms = number / count / PROFILE_RATE * 1000
        print(f"| {label} | {ms:.2f} | {number / total:.0%} |")
    print(f"| all sampled | {total / count / PROFILE_RATE * 1000:.2f} | 100% |")
    print("top leaf frames:")
    for leaf, number in sorted(leaves.items(), key=lambda item: -item[1])[:15]:
        print(f"  {number / total:6.1%}  {leaf}")


PROFILE_RATE = 250


def profile(target: Target, pid: int, args) -> None:
    """py-spy on the server at one connection; its profile, ranked by share."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy is not installed (pip install py-spy): no profile", flush=True)
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-http-spy-"))
    out = folder / "profile.txt"
    with open(folder / "py-spy.log", "wb") as log:
        spy_proc = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(args.profile_seconds)),
                "--rate",
                str(PROFILE_RATE),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out),
            ],
            stdout=log,
            stderr=log,
        )
        time.sleep(1.0)  # py-spy attaches
        errors: list[str] = []
        latencies: list[float] = []
        deadline = time.perf_counter() + args.profile_seconds - 1.5
        worker(target, 0, [], deadline, latencies, [], 10**9, errors)
        spy_proc.wait(timeout=args.profile_seconds + 60)
    if not out.exists():
        print(f"py-spy failed: {(folder / 'py-spy.log').read_text()[-300:]}")
        return
    print(f"py-spy: folded stacks in {out}", flush=True)
    rank(out, len(latencies))


# --------------------------------------------------------------------------
# SimpleSAMLphp


def peer_cells(args) -> list[Cell]:
    cert = Path("/etc/simplesamlphp/cert/bench-idp.crt")
    if not cert.exists():
        sys.exit("SimpleSAMLphp is not set up: run bench/peers/simplesamlphp/setup.sh")
    cookies = [peer_sign_in() for _ in range(args.sessions)]

    def apache_pids() -> list[int]:
        return processes("apache2")

    target = Target(
        "SimpleSAMLphp 1.19 on apache prefork",
        [PEER_PORT],
        f"127.0.0.1:{PEER_PORT}",
        "/simplesaml/saml2/idp/SSOService.php",
        cookies,
        peer_query,
        cert,
        apache_pids,
    )
    cells = []
    for connections in args.connections:
        cell = run_cell(target, connections, args)
        print(cell.line(), flush=True)
        if cell.first_error:
            print(f"    first error: {cell.first_error}", flush=True)
        cells.append(cell)
    return cells


# --------------------------------------------------------------------------
# RSA itself


def openssl_speed(bits: int, seconds: int) -> float:
    """sign/s of ``openssl speed rsaBITS`` (one process)."""
    out = subprocess.run(
        ["openssl", "speed", "-seconds", str(seconds), f"rsa{bits}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(rf"^rsa\s+{bits} bits\s+\S+s\s+\S+s\s+([\d.]+)", out, re.M)
    if match is None:
        sys.exit(f"cannot read openssl speed's output:\n{out}")
    return float(match.group(1))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", nargs="+", choices=["sqlite", "postgresql"])
    parser.add_argument("--postgresql-url")
    parser.add_argument("--peer", choices=["simplesamlphp"])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--key-sizes", type=int, nargs="*", default=[2048, 3072])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--sample", type=int, default=50, help="verify every Nth")
    parser.add_argument(
        "--expected",
        type=float,
        default=300.0,
        help="SSO/s to pre-generate requests for",
    )
    parser.add_argument("--profile-seconds", type=float, default=0.0)
    parser.add_argument(
        "--nodes", type=int, default=2, help="waitress processes on PostgreSQL"
    )
    parser.add_argument(
        "--soak-seconds",
        type=float,
        default=0.0,
        help="then a long run at the most connections: RSS every 10 s, slow requests",
    )
    parser.add_argument(
        "--threads", type=int, help="waitress threads per process (default: the ini's)"
    )
    args = parser.parse_args()
    if args.seconds <= 0 or args.runs < 1 or args.sessions < 1 or args.sample < 1:
        parser.error("--seconds, --runs, --sessions and --sample must be positive")
    if min(args.connections) < 1:
        parser.error("--connections must be positive")
    if args.nodes < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--nodes and --threads must be positive")
    pg_url = args.postgresql_url or os.environ.get("IDP_TEST_POSTGRESQL_URL")
    databases = args.database or (["sqlite", "postgresql"] if pg_url else ["sqlite"])
    if "postgresql" in databases and not pg_url:
        parser.error("PostgreSQL needs --postgresql-url or IDP_TEST_POSTGRESQL_URL")
    print(f"uptime: {uptime()}")
    print(
        f"{os.cpu_count()} cores; {args.runs} x {args.seconds:g} s per cell; "
        f"connections {args.connections}; every {args.sample}th response verified",
        flush=True,
    )
    cells: list[Cell] = []
    if args.peer == "simplesamlphp":
        cells += peer_cells(args)
    for key_size in args.key_sizes:
        for kind in databases:
            cells += idme_cells(kind, pg_url, key_size, args)
    speeds = {
        bits: openssl_speed(bits, 5) for bits in sorted(set(args.key_sizes) | {2048})
    }
    print(f"uptime: {uptime()}")
    print()
    print(
        "| | SSO/s, "
        + " | SSO/s, ".join(f"{c} conn." for c in args.connections)
        + " | p50 ms (1 conn.) | p99 ms (1 conn.) | max ms | errors |"
    )
    print("|---|" + "---:|" * (len(args.connections) + 4))
    by_label: dict[str, dict[int, Cell]] = {}
    for cell in cells:
        by_label.setdefault(cell.label, {})[cell.connections] = cell
    for label, row in by_label.items():
        rates = " | ".join(
            f"{statistics.median(row[c].rates):.0f}" if c in row else "-"
            for c in args.connections
        )
        first = row[min(row)]
        ordered = sorted(first.latencies) or [float("nan")]
        worst = max(max(c.latencies, default=0.0) for c in row.values())
        errors = sum(c.errors for c in row.values())
        print(
            f"| {label} | {rates} | {percentile(ordered, 0.5):.1f} | "
            f"{percentile(ordered, 0.99):.1f} | {worst:.0f} | {errors} |"
        )
    for bits, speed in speeds.items():
        limit = " | ".join(
            f"~{speed / 2 * min(c, os.cpu_count() or 1):,.0f}" for c in args.connections
        )
        print(
            f"| openssl's RSA-{bits} limit ({speed:,.0f} sign/s) / 2 signatures, "
            f"per core | {limit} | {2000 / speed:.1f} | | | |"
        )
    print()
    for cell in cells:
        bits = re.search(r"RSA-(\d+)$", cell.label)
        if bits is None or int(bits.group(1)) not in speeds:
            continue
        speed = speeds[int(bits.group(1))]
        signs = 2 * statistics.median(cell.rates)
        cores = min(cell.connections, os.cpu_count() or 1)
        print(
            f"{cell.label}, {cell.connections} conn.: {signs:,.0f} signatures/s ="
            f" {signs / (speed * cores):.0%} of openssl's rsa{bits.group(1)}"
            f" ({speed:,.0f} sign/s per core x {cores})"
        )


if __name__ == "__main__":
    main()
