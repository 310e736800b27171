"""One idMe node against two behind nginx; a soak; PostgreSQL restarted mid-soak.

Issue 17's proof that idMe scales out as stateless nodes. Everything runs
on this machine, on 127.0.0.1, and is started here and stopped at the end:

* **PostgreSQL**: a private cluster (``initdb`` in a temporary folder, run
  as the ``postgres`` user when this runs as root, ``pg_ctl`` on a free
  port, SCRAM passwords on 127.0.0.1 only), so restarting it disturbs no
  one else's database;
* **the production shape**, built by the test suite's harness
  (``tests/cluster.py``) on that server: ``production.ini`` in production
  mode (secrets from the environment), two nodes each ``idp-admin INI
  serve`` with ``[server:main]``'s threads and limits, nginx (the Debian
  binary) on the shipped site ``deploy/nginx/idme.conf`` over TLS, round
  robin with upstream keepalive. Here bcrypt runs at the production cost
  12 and the key is ``--key-size`` (RSA-3072, the production default);
* **one node or two**: for the one-node cells node 2 is marked ``down`` in
  the upstream and nginx reloaded, as an operator takes a node out; it is
  put back for the two-node cells. Same run, processes and database.

**Throughput** (``--seconds`` x ``--runs`` per cell, after a warm-up):

* *SSO*: signed-in users (sessions made by walking the real sign-in pages
  through nginx) replaying fresh Redirect AuthnRequests (new ID, current
  IssueInstant), one keep-alive TLS connection per client thread, as
  ``bench/bench_http_sso.py`` does over plain HTTP; every ``--sample``-th
  Response is verified afterwards (both signatures against the IdP's
  certificate, Audience, InResponseTo, Recipient, Destination);
* *sign-in*: the three real sign-in pages (identifier, security image,
  password) with a new TLS connection per sign-in, as a new visitor's
  browser would, each from its own loopback address (127.a.b.1, so each
  comes from its own /24 and the per-address lookup limit of AUTH-27 is
  what it is in production: per person). Every ``--sample``-th new session
  is verified afterwards by an SSO that must return a verified Response.

SSO/s (or sign-ins/s) is the median run; p50/p90/p99/max over all runs;
errors are anything but the expected answer (a status, a missing field, a
timeout, a failed verification). The CPU of the idMe nodes, nginx,
PostgreSQL and this client is measured per run (in cores; the machine has
``os.cpu_count()``), which says what the ceiling is. The ratio two nodes /
one node is printed per connection count and for the best cells.

**Soak** (``--soak-seconds``): SSO through nginx, both nodes in, at
``--soak-load`` (80 %) of the best two-node SSO rate measured above, paced
(each connection sends on a schedule; a late request is sent at once and
the lag reported). Each node's RSS every 10 s, growth from the first
sample after 10 s to the last; p50/p99/max; errors. With
``--restart-database-at S``, PostgreSQL is stopped (``pg_ctl stop -m
fast``) S seconds in, kept down ``--outage-seconds``, and started again:
answers from the stop until each node's first SSO after PostgreSQL is back
must be the bilingual 503 page (Malay and English titles, a reference, a
``Retry-After``), counted apart; a 500, a 502, a timeout or a 503 without
that page is an error, and so is a node that does not recover by itself
(the nodes' processes are checked to be the same at the end). From the
moment PostgreSQL accepts connections, each node is asked directly (as
nginx would) for an SSO every 10 ms: the time to its first 200 is printed,
with the first 200 through nginx.

The exit status is 1 if any error occurred (or a node did not recover),
0 otherwise; a bad option or an environment that cannot be set up is one
line on stderr and exit status 2.

Usage (root, or a user who may run initdb; nginx and PostgreSQL 15
installed)::

    .venv/bin/python bench/bench_nodes.py [--seconds 15] [--runs 3]
        [--connections 1 4] [--two-node-connections 1 4 8]
        [--signin-connections 1 4] [--soak-seconds 600]
        [--restart-database-at 300] [--outage-seconds 5]

Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine  # noqa: E402

from bench.bench_http_sso import (  # noqa: E402
    NUMBER,
    PASSWORD,
    RELAY_STATE,
    RESPONSE_FIELD,
    SP_ACS,
    SP_ENTITY_ID,
    Browser,
    cpu_seconds,
    free_port,
    idme_sign_in,
    loadavg,
    own_cpu,
    percentile,
    seed,
    uptime,
    verify,
)
from idp.requestlog import REFERENCE_PATTERN  # noqa: E402
from idp.saml import keys as keystore  # noqa: E402
from tests.cluster import POSTGRESQL_ENV, Cluster, _replace  # noqa: E402
from tests.nodes import HOST  # noqa: E402
from tests.saml_requests import authn_request, redirect_query  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "idp_bench"
TIMEOUT = 30.0  # a request not answered in this long is a hang: an error
SIGNIN_USERS = 64
SIGNIN_ROUNDS = 12  # the production bcrypt cost
RSS_EVERY = 10.0
RECOVERY_LIMIT = 60.0  # a node not serving this long after PostgreSQL: an error
SESSION_VISITORS = 60_000  # the SSO sessions' sign-ins come from their own /24s
# The bilingual database page (idp.views.errors.DATABASE_PAGE), both languages.
OUTAGE_TITLES = (
    b"Perkhidmatan tidak tersedia buat sementara waktu",
    b"The service is temporarily unavailable",
)
REFERENCE = re.compile(f'class="reference">{REFERENCE_PATTERN}</code>'.encode())
LEAKS = (b"Traceback", b"OperationalError", b"psycopg", b"SELECT ", b"INSERT ")


class SetupError(Exception):
    """The benchmark's environment cannot be set up: one line, exit status 2."""


# --------------------------------------------------------------------------
# Processes


def process_tree(root: int) -> list[int]:
    """``root`` and every process descending from it, now."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(") ")[2].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sorted(pid for pid in tree if pid == root or pid in parents)


def rss_of(pid: int) -> float:
    """One process's resident memory in MB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run(command: list[str], what: str, **options) -> None:
    done = subprocess.run(command, capture_output=True, text=True, **options)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise SetupError(f"{what} failed: {detail[-1] if detail else done.returncode}")


class PrivatePostgres:
    """A PostgreSQL cluster of this benchmark's own, which it may restart."""

    def __init__(self, folder: Path, bin_dir: Path) -> None:
        if not (bin_dir / "initdb").exists():
            raise SetupError(f"no initdb in {bin_dir} (see --postgresql-bin)")
        self.bin = bin_dir
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.password = secrets.token_urlsafe(24)
        self.as_owner: list[str] = []
        folder.mkdir()
        if os.geteuid() == 0:
            # initdb refuses root: the cluster belongs to the postgres user.
            self.as_owner = ["runuser", "-u", "postgres", "--"]
            shutil.chown(folder, "postgres")
        folder.chmod(0o700)
        pwfile = folder / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_owner:
            shutil.chown(pwfile, "postgres")
        pwfile.chmod(0o600)
        run(
            [
                *self.as_owner,
                str(bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                PG_USER,
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            "initdb",
        )
        pwfile.unlink()
        self.start()

    def url(self, database: str) -> str:
        return (
            f"postgresql+psycopg://{PG_USER}:{self.password}@127.0.0.1:"
            f"{self.port}/{database}"
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c max_connections=100"
        )
        run(
            [
                *self.as_owner,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.folder / "postgresql.log"),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ],
            "pg_ctl start",
        )

    def stop(self, mode: str = "fast") -> None:
        run(
            [
                *self.as_owner,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "stop",
            ],
            "pg_ctl stop",
        )

    def pids(self) -> list[int]:
        try:
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return process_tree(postmaster)


class BenchCluster(Cluster):
    """The test suite's cluster (``tests/cluster.py``), with production's costs.

    Its ini is ``production.ini`` as the harness writes it, then the
    settings in ``overrides`` (bcrypt at cost 12, the key size, threads).
    """

    overrides: dict[str, str] = {}

    def _write_ini(self) -> None:
        super()._write_ini()
        text = self.ini.read_text()
        for name, value in self.overrides.items():
            text = _replace(text, name, value)
        self.ini.write_text(text)


class Front:
    """Clients of the cluster: through nginx over HTTPS, or straight to a node."""

    def __init__(self, cluster: Cluster) -> None:
        self.port = cluster.ports.https
        self.host = f"{HOST}:{self.port}"  # what the browser sends
        self.context = cluster.tls()
        self.sso_url = f"{cluster.url}/saml/sso/redirect"

    def connection(self, source: str | None = None) -> http.client.HTTPConnection:
        return http.client.HTTPSConnection(
            HOST,
            self.port,
            timeout=TIMEOUT,
            context=self.context,
            source_address=(source, 0) if source else None,
        )

    def query(self) -> str:
        """A fresh Redirect AuthnRequest (new ID, now) for the benchmark's SP."""
        xml = authn_request(
            issuer=SP_ENTITY_ID, acs_url=SP_ACS, destination=self.sso_url
        )
        return redirect_query(xml, relay_state=RELAY_STATE)


# --------------------------------------------------------------------------
# The users


def source_address(n: int) -> str:
    """The ``n``-th visitor's loopback address, each in a /24 of its own."""
    return f"127.{1 + (n // 250) % 250}.{1 + n % 250}.1"


def signin_number(n: int) -> str:
    return f"0906011400{n:02d}"


def add_signin_users(url: str) -> None:
    """``SIGNIN_USERS`` users with bcrypt at cost 12 and the SSO user's role."""
    from sqlalchemy.orm import Session

    from idp.db import make_engine
    from idp.models import Role, User
    from idp.services.passwords import BcryptPasswordService

    hashed = BcryptPasswordService(rounds=SIGNIN_ROUNDS).hash(PASSWORD)
    engine = make_engine({"sqlalchemy.url": url})
    with Session(engine) as session, session.begin():
        role = session.query(Role).filter_by(name="guru").one()
        for n in range(SIGNIN_USERS):
            user = User(
                identifier_kind="mykad",
                identifier=signin_number(n),
                email=f"guru{n}@example.com.my",
                full_name=f"Cikgu Ujian {n}",
                phone="+60123456789",
                category="educator",
                institution="SK Taman Melati",
                locale="ms",
                security_image="cat",
                security_phrase="Nasi lemak kegemaran saya",
                password_hash=hashed,
            )
            user.roles.append(role)
            session.add(user)
    engine.dispose()


class Visitors:
    """A new address for every sign-in, shared by all threads."""

    def __init__(self) -> None:
        self._count = itertools.count()
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._count)


def sign_in(front: Front, number: str, visitor: int) -> str:
    """The three sign-in pages through nginx, on a new TLS connection."""
    browser = Browser(front.port, front.host, "https")
    browser.conn = front.connection(source_address(visitor))
    try:
        return idme_sign_in(front.port, number, PASSWORD, browser)
    finally:
        browser.conn.close()


# --------------------------------------------------------------------------
# The load


@dataclass
class Tally:
    """What the clients saw in one run (lists: appends are atomic)."""

    ok: list[tuple[float, float]] = field(default_factory=list)  # (end, ms)
    samples: list[tuple[bytes, str]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    # The bilingual database page: (begun, end, ms)
    unavailable: list[tuple[float, float, float]] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)  # pacing: how late, ms


def classify(tally: Tally, status: int, headers, body: bytes, begun: float) -> bytes:
    """Record one answer; return the SAMLResponse field if it is a success."""
    end = time.perf_counter()
    elapsed = (end - begun) * 1000
    if status == 200:
        match = RESPONSE_FIELD.search(body)
        if match is not None:
            tally.ok.append((end, elapsed))
            return match.group(1)
        tally.errors.append((end, f"200 without a SAMLResponse: {body[:200]!r}"))
        return b""
    if status == 503:
        problem = outage_page_problem(headers, body)
        if problem is None:
            tally.unavailable.append((begun, end, elapsed))
        else:
            tally.errors.append((end, f"503 {problem}: {body[:200]!r}"))
        return b""
    tally.errors.append((end, f"{status}: {body[:200]!r}"))
    return b""


def outage_page_problem(headers, body: bytes) -> str | None:
    """What is wrong with a 503 that should be the bilingual database page.

    None when it is that page: ``Retry-After`` in seconds, HTML, the page's
    error code, its title in Malay and in English, a reference of the
    request log's shape, and nothing of the fault's insides.
    """
    retry = headers.get("Retry-After") or ""
    if not retry.isdigit() or int(retry) <= 0:
        return f"without a Retry-After in seconds ({retry!r})"
    if not (headers.get("Content-Type") or "").startswith("text/html"):
        return f"not HTML ({headers.get('Content-Type')!r})"
    if b'data-error-code="database_unavailable"' not in body:
        return "without the database page's error code"
    for title in OUTAGE_TITLES:
        if title not in body:
            return f"without {title.decode()!r}"
    if REFERENCE.search(body) is None:
        return "without a reference"
    for leak in LEAKS:
        if leak in body:
            return f"showing {leak.decode()!r}"
    return None


def guarded(work: Callable, tally: Tally, *args) -> None:
    """Run a client; if it breaks, that is an error of the run, not a crash."""
    try:
        work(*args)
    except Exception as error:  # any client failure is counted, never hidden
        tally.errors.append((time.perf_counter(), f"the client failed: {error!r}"))


def sso_once(
    conn, host: str, cookie: str, query: str, tally: Tally, extra=None
) -> bytes | None:
    """One SSO on ``conn``, recorded in ``tally``; its SAMLResponse if it
    succeeded, b"" for another answer, None if the connection failed."""
    headers = {
        "Host": host,
        "Cookie": cookie,
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) bench_nodes",
        "Accept-Language": "ms",
        **(extra or {}),
    }
    begun = time.perf_counter()
    try:
        conn.request("GET", f"/saml/sso/redirect?{query}", headers=headers)
        answer = conn.getresponse()
        body = answer.read()
    except (OSError, http.client.HTTPException) as error:
        tally.errors.append((time.perf_counter(), f"{type(error).__name__}: {error}"))
        return None
    return classify(tally, answer.status, answer.headers, body, begun)


def sso_worker(
    front: Front,
    cookie: str,
    queries: list[str],
    deadline: float,
    tally: Tally,
    sample_every: int,
    interval: float = 0.0,
    start: float = 0.0,
) -> None:
    """Replay fresh AuthnRequests until ``deadline``; paced if ``interval``."""
    conn = front.connection()
    count = 0
    due = start
    while True:
        if interval:
            if due >= deadline:
                break
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            tally.lag.append(max(0.0, now - due) * 1000)
            due += interval
        if time.perf_counter() >= deadline:
            break
        try:
            query = queries.pop()
        except IndexError:
            query = front.query()
        encoded = sso_once(conn, front.host, cookie, query, tally)
        if encoded is None:  # the connection broke: a new one
            conn.close()
            conn = front.connection()
        elif encoded:
            count += 1
            if count % sample_every == 0:
                tally.samples.append((encoded, query))
    conn.close()


def first_sso(front: Front, port: int, cookie: str, limit: float) -> float | None:
    """Straight to the node on ``port`` (as nginx would ask it), an SSO every
    10 ms until one succeeds: when it did, or None after ``limit`` seconds."""
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": HOST}
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        conn = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
        try:
            if sso_once(conn, front.host, cookie, front.query(), Tally(), forwarded):
                return time.perf_counter()
        finally:
            conn.close()
        time.sleep(0.01)
    return None


def signin_worker(
    front: Front,
    visitors: Visitors,
    deadline: float,
    tally: Tally,
    sample_every: int,
    cookies: list[str],
) -> None:
    """Whole sign-ins, one new visitor (address, TLS connection) each."""
    while time.perf_counter() < deadline:
        visitor = visitors.next()
        begun = time.perf_counter()
        try:
            cookie = sign_in(front, signin_number(visitor % SIGNIN_USERS), visitor)
        except SystemExit as error:  # idme_sign_in's one-line complaint
            tally.errors.append((time.perf_counter(), str(error.code)))
            continue
        except (OSError, http.client.HTTPException) as error:
            tally.errors.append(
                (time.perf_counter(), f"{type(error).__name__}: {error}")
            )
            continue
        end = time.perf_counter()
        tally.ok.append((end, (end - begun) * 1000))
        if len(tally.ok) % sample_every == 0:
            cookies.append(cookie)


@dataclass
class Cell:
    kind: str  # "SSO" or "sign-in"
    nodes: int
    connections: int
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    verified: int = 0
    cores: dict[str, list[float]] = field(default_factory=dict)
    loads: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    def cpu(self, what: str) -> float:
        return statistics.median(self.cores.get(what) or [0.0])

    def line(self) -> str:
        ordered = sorted(self.latencies) or [float("nan")]
        unit = "SSO/s" if self.kind == "SSO" else "sign-ins/s"
        return (
            f"{self.kind:<7} {self.nodes} node{'s' if self.nodes > 1 else ' '} "
            f"{self.connections:>2} conn  {self.rate:7.1f} {unit} "
            f"(runs {' '.join(f'{r:.0f}' for r in self.rates)})  "
            f"p50 {percentile(ordered, 0.5):6.1f}  p90 {percentile(ordered, 0.9):6.1f}"
            f"  p99 {percentile(ordered, 0.99):6.1f}  max {ordered[-1]:7.1f} ms  "
            f"errors {self.errors}  verified {self.verified}  cores: "
            + " ".join(f"{what} {self.cpu(what):.2f}" for what in self.cores)
            + f"  load {' | '.join(self.loads)}"
        )


class Bench:
    """The running cluster and what the cells share."""

    def __init__(self, args, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.stack = contextlib.ExitStack()
        self.postgres: PrivatePostgres | None = None
        self.cluster: Cluster | None = None
        self.front: Front | None = None
        self.cert = Path()
        self.cookies: list[str] = []
        self.in_service = 2
        self.stopping = threading.Event()  # set: no restart starts PostgreSQL

    def start(self) -> None:
        args = self.args
        self.postgres = PrivatePostgres(self.folder / "postgresql", args.postgresql_bin)
        # The harness makes its database on whichever server this names.
        os.environ[POSTGRESQL_ENV] = self.postgres.url("postgres")
        overrides = {
            "idp.bcrypt_rounds": str(SIGNIN_ROUNDS),
            "idp.key_size": str(args.key_size),
        }
        if args.threads:
            overrides["threads"] = str(args.threads)
        BenchCluster.overrides = overrides
        cluster_folder = self.folder / "cluster"
        cluster_folder.mkdir()
        try:
            self.cluster = self.stack.enter_context(
                BenchCluster.build(cluster_folder, nodes=2)
            )
        except (RuntimeError, AssertionError) as error:
            detail = str(error).strip().splitlines() or [type(error).__name__]
            raise SetupError(f"the cluster did not start: {detail[0]}") from error
        self.front = Front(self.cluster)
        engine = create_engine(self.cluster.database_url)
        try:
            seed(engine)
        finally:
            engine.dispose()
        add_signin_users(self.cluster.database_url)
        self.cert = Path(keystore.load(cluster_folder / "certs").cert_file)
        sessions = max(
            [*args.connections, *args.two_node_connections, args.soak_connections]
        )
        # Through nginx, both nodes in service: sessions made on either node,
        # used on both.
        self.cookies = [
            sign_in(self.front, NUMBER, SESSION_VISITORS + n) for n in range(sessions)
        ]

    def stop(self) -> None:
        self.stopping.set()
        try:
            if self.postgres is not None and not self.postgres.pids():
                # Interrupted in the outage: the harness drops its database.
                self.postgres.start()
            self.stack.close()  # nginx, the nodes, the harness's database
        except Exception as error:  # clean-up goes on; one line says what failed
            detail = str(error).strip().splitlines() or [type(error).__name__]
            print(f"bench_nodes: clean-up: {detail[0]}", file=sys.stderr)
        finally:
            if self.postgres is not None and self.postgres.pids():
                try:
                    self.postgres.stop("fast")
                except SetupError as error:
                    print(f"stopping PostgreSQL: {error}", file=sys.stderr)

    def use_nodes(self, count: int) -> None:
        """Node 2 out of nginx's upstream (``down``) or back in, then reload."""
        assert self.cluster is not None
        if count != self.in_service:
            self.cluster.set_down(1, down=count == 1)
            self.in_service = count

    def node_pids(self) -> list[int]:
        assert self.cluster is not None
        return [node.process.pid for node in self.cluster.nodes if node.process]

    def meters(self) -> dict[str, Callable[[], list[int]]]:
        assert self.cluster and self.cluster.nginx and self.postgres
        nginx = self.cluster.nginx.process
        assert nginx is not None
        return {
            "idMe": self.node_pids,
            "nginx": lambda: process_tree(nginx.pid),
            "postgres": self.postgres.pids,
        }

    def run_cell(self, kind: str, nodes: int, connections: int) -> Cell:
        args = self.args
        cell = Cell(kind, nodes, connections)
        self.use_nodes(nodes)
        self.load(kind, connections, min(2.0, args.seconds), Tally(), None)
        for _ in range(args.runs):
            tally = Tally()
            meters = self.meters()
            before = {what: cpu_seconds(pids()) for what, pids in meters.items()}
            client0 = own_cpu()
            new_cookies: list[str] = []
            elapsed = self.load(kind, connections, args.seconds, tally, new_cookies)
            for what, pids in meters.items():
                used = cpu_seconds(pids()) - before[what]
                cell.cores.setdefault(what, []).append(used / elapsed)
            cell.cores.setdefault("client", []).append((own_cpu() - client0) / elapsed)
            cell.rates.append(len(tally.ok) / elapsed)
            cell.latencies.extend(ms for _, ms in tally.ok)
            cell.loads.append(loadavg())
            problems = [text for _, text in tally.errors]
            problems += ["503 (database page) with PostgreSQL up"] * len(
                tally.unavailable
            )
            failed = self.check_samples(tally.samples, new_cookies)
            problems += failed
            cell.errors += len(problems)
            cell.first_error = cell.first_error or (problems[0] if problems else "")
            cell.verified += len(tally.samples) + len(new_cookies) - len(failed)
        return cell

    def load(
        self,
        kind: str,
        connections: int,
        seconds: float,
        tally: Tally,
        new_cookies: list[str] | None,
    ) -> float:
        args = self.args
        front = self.front
        assert front is not None
        sample = 10**9
        if new_cookies is not None:
            sample = args.sample if kind == "SSO" else args.signin_sample
        if kind == "SSO":
            pool = [front.query() for _ in range(int(seconds * args.expected))]
            begun = time.perf_counter()
            threads = [
                threading.Thread(
                    target=guarded,
                    args=(
                        sso_worker,
                        tally,
                        front,
                        self.cookies[i % len(self.cookies)],
                        pool[i::connections],
                        begun + seconds,
                        tally,
                        sample,
                    ),
                )
                for i in range(connections)
            ]
        else:
            visitors = Visitors()
            begun = time.perf_counter()
            threads = [
                threading.Thread(
                    target=guarded,
                    args=(
                        signin_worker,
                        tally,
                        front,
                        visitors,
                        begun + seconds,
                        tally,
                        sample,
                        new_cookies if new_cookies is not None else [],
                    ),
                )
                for _ in range(connections)
            ]
        for thread in threads:
            # Daemons: interrupted, the run ends without them.
            thread.daemon = True
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - begun

    def check_samples(
        self, samples: list[tuple[bytes, str]], new_cookies: list[str]
    ) -> list[str]:
        """Verify sampled Responses; a new session must carry a verified SSO."""
        problems = []
        for encoded, query in samples:
            try:
                verify(encoded, query, self.cert)
            except Exception as error:  # any failure is the sample's error
                problems.append(f"verification: {error!r}")
        front = self.front
        assert front is not None
        for cookie in new_cookies:
            tally = Tally()
            query = front.query()
            conn = front.connection()
            try:
                encoded = sso_once(conn, front.host, cookie, query, tally)
            finally:
                conn.close()
            if not encoded:
                problems.append(
                    "a new session gave no SSO: "
                    + (tally.errors[0][1] if tally.errors else "a 503")
                )
                continue
            try:
                verify(encoded, query, self.cert)
            except Exception as error:  # any failure is the sample's error
                problems.append(f"verification after sign-in: {error!r}")
        return problems

    # ----------------------------------------------------------------------

    def soak(self, rate: float) -> bool:
        """Paced SSO on two nodes; RSS, tail; PostgreSQL restarted. True if clean."""
        args = self.args
        front, cluster, postgres = self.front, self.cluster, self.postgres
        assert front and cluster and postgres
        self.use_nodes(2)
        connections = args.soak_connections
        interval = connections / rate
        tally = Tally()
        pids_before = self.node_pids()
        begun = time.perf_counter()
        deadline = begun + args.soak_seconds
        threads = [
            threading.Thread(
                target=guarded,
                args=(
                    sso_worker,
                    tally,
                    front,
                    self.cookies[i % len(self.cookies)],
                    [],
                    deadline,
                    tally,
                    args.sample,
                    interval,
                    begun + i * interval / connections,
                ),
            )
            for i in range(connections)
        ]
        restart: dict[str, float] = {"begun": begun}
        recovered: dict[int, float | None] = {}
        restart_error: list[str] = []

        def restart_database() -> None:
            time.sleep(max(0.0, begun + args.restart_database_at - time.perf_counter()))
            restart["stop"] = time.perf_counter()
            try:
                postgres.stop("fast")
                restart["stopped"] = time.perf_counter()
                time.sleep(args.outage_seconds)
                restart["start"] = time.perf_counter()
                if self.stopping.is_set():
                    return
                postgres.start()
                restart["up"] = time.perf_counter()
            except SetupError as error:
                restart_error.append(str(error))
                return
            probes = [
                threading.Thread(
                    target=lambda n=n, port=port: recovered.__setitem__(
                        n, first_sso(front, port, self.cookies[0], RECOVERY_LIMIT)
                    )
                )
                for n, port in enumerate(cluster.ports.nodes)
            ]
            for probe in probes:
                probe.start()
            for probe in probes:
                probe.join()

        restarter = None
        if args.restart_database_at is not None:
            restarter = threading.Thread(target=restart_database, daemon=True)
        rss: list[tuple[float, list[float]]] = [
            (0.0, [rss_of(pid) for pid in pids_before])
        ]
        cpu0 = {what: cpu_seconds(pids()) for what, pids in self.meters().items()}
        client0 = own_cpu()
        for thread in threads:
            # Daemons: interrupted, the run ends without them.
            thread.daemon = True
            thread.start()
        if restarter is not None:
            restarter.start()
        next_sample = begun + RSS_EVERY
        while time.perf_counter() < deadline:
            time.sleep(max(0.0, min(next_sample, deadline) - time.perf_counter()))
            if time.perf_counter() >= next_sample:
                sample = [rss_of(pid) for pid in pids_before]
                rss.append((time.perf_counter() - begun, sample))
                next_sample += RSS_EVERY
        for thread in threads:
            thread.join()
        if restarter is not None:
            restarter.join()
        elapsed = time.perf_counter() - begun
        cores = {
            what: (cpu_seconds(pids()) - cpu0[what]) / elapsed
            for what, pids in self.meters().items()
        }
        if restarter is not None:
            # Its backends were replaced: their CPU before the stop is gone.
            cores.pop("postgres")
        cores["client"] = (own_cpu() - client0) / elapsed
        errors = [text for _, text in tally.errors] + restart_error
        self.soak_summary(tally, elapsed, rate, cores)
        if restarter is not None:
            errors += self.outage_report(tally, restart, recovered)
        if not all(node.running() for node in cluster.nodes):
            errors.append("a node exited during the soak")
        if self.node_pids() != pids_before:
            errors.append("a node was restarted during the soak")
        for index, port in enumerate(cluster.ports.nodes):
            series = [sample[index] for _, sample in rss]
            first = next((s[index] for t, s in rss if t >= RSS_EVERY - 0.5), series[0])
            growth = (series[-1] - first) / first * 100 if first else float("nan")
            print(
                f"    node {index + 1} ({HOST}:{port}) RSS MB every "
                f"{RSS_EVERY:.0f} s: "
                + " ".join(f"{mb:.0f}" for mb in series)
                + f"  ({growth:+.1f} % from 10 s to the end; target <= 5 %"
                + ("" if growth <= 5 else ": ABOVE THE TARGET")
                + ")",
                flush=True,
            )
        problems = self.check_samples(tally.samples, [])
        print(f"    verified {len(tally.samples) - len(problems)} sampled Responses")
        errors += problems
        print(f"    errors: {len(errors)}", flush=True)
        for text in errors[:5]:
            print(f"      {text}", flush=True)
        return not errors

    def soak_summary(self, tally: Tally, elapsed: float, rate: float, cores) -> None:
        ordered = sorted(ms for _, ms in tally.ok) or [float("nan")]
        lags = sorted(tally.lag) or [float("nan")]
        sent = len(tally.ok) + len(tally.unavailable) + len(tally.errors)
        print(
            f"soak: two nodes, {self.args.soak_connections} connections paced at "
            f"{rate:.0f} SSO/s for {elapsed:.0f} s: {sent} requests "
            f"({sent / elapsed:.0f}/s), "
            f"{len(tally.ok)} SSOs ({len(tally.ok) / elapsed:.0f}/s), "
            f"p50 {percentile(ordered, 0.5):.1f} p99 {percentile(ordered, 0.99):.1f} "
            f"max {ordered[-1]:.1f} ms; sent behind schedule by p50 "
            f"{percentile(lags, 0.5):.1f} p99 {percentile(lags, 0.99):.1f} max "
            f"{lags[-1]:.0f} ms; cores: "
            + " ".join(f"{what} {value:.2f}" for what, value in cores.items()),
            flush=True,
        )
        if sent / elapsed < 0.95 * rate:
            print(
                f"    the soak fell short of its rate ({sent / elapsed:.0f} of "
                f"{rate:.0f}/s): the machine did not keep up; its latencies "
                "are those of a saturated machine, not of 80 % load",
                flush=True,
            )

    def outage_report(
        self, tally: Tally, restart: dict[str, float], recovered: dict
    ) -> list[str]:
        """The restart's figures; what went wrong in it, as error lines."""
        errors: list[str] = []
        if "up" not in restart:
            return ["PostgreSQL was not restarted"]
        print(
            f"PostgreSQL stopped {restart['stop'] - restart['begun']:.1f} s in "
            f"(pg_ctl stop -m fast took {restart['stopped'] - restart['stop']:.2f} "
            f"s), down {restart['up'] - restart['stopped']:.1f} s, accepting "
            f"connections {restart['up'] - restart['start']:.2f} s after pg_ctl "
            "start",
            flush=True,
        )
        back = [t for t in recovered.values() if t is not None]
        for n, when in sorted(recovered.items()):
            if when is None:
                errors.append(
                    f"node {n + 1} gave no 200 within {RECOVERY_LIMIT:.0f} s of "
                    "PostgreSQL's return"
                )
            else:
                ms = (when - restart["up"]) * 1000
                print(
                    f"    node {n + 1}: its first SSO {ms:.0f} ms after PostgreSQL "
                    "accepted connections again (the node was not restarted)",
                    flush=True,
                )
        through = [end for end, _ in tally.ok if end >= restart["up"]]
        if through:
            print(
                f"    through nginx: the first 200 "
                f"{(min(through) - restart['up']) * 1000:.0f} ms after",
                flush=True,
            )
        # The outage: answers that ended after the stop and began before the
        # last node was serving again. A 503 outside it is an error.
        until = max(back, default=float("inf"))
        during = [
            (begun, end, ms)
            for begun, end, ms in tally.unavailable
            if end >= restart["stop"] and begun <= until
        ]
        outside = len(tally.unavailable) - len(during)
        if outside:
            errors.append(f"{outside} database pages with PostgreSQL serving")
        others = [t for t, _ in tally.errors if restart["stop"] <= t <= until]
        slowest = max((ms for _, _, ms in during), default=0.0)
        print(
            f"    during the outage: {len(during)} answers were the bilingual 503 "
            f"page with Retry-After and a reference (slowest {slowest:.0f} ms); "
            + (
                f"{len(others)} were something else (errors)"
                if others
                else "none was a 500, another status or a hang"
            ),
            flush=True,
        )
        return errors


# --------------------------------------------------------------------------


def ratio_lines(cells: list[Cell]) -> list[str]:
    lines = []
    for kind in ("SSO", "sign-in"):
        one = {c.connections: c for c in cells if c.kind == kind and c.nodes == 1}
        two = {c.connections: c for c in cells if c.kind == kind and c.nodes == 2}
        if not one or not two:
            continue
        for connections in sorted(set(one) & set(two)):
            if not one[connections].rate:
                continue
            lines.append(
                f"{kind}, {connections} conn.: two nodes / one node = "
                f"{two[connections].rate / one[connections].rate:.2f}x"
            )
        best_one = max(one.values(), key=lambda c: c.rate)
        best_two = max(two.values(), key=lambda c: c.rate)
        target = " (target >= 1.8x)" if kind == "SSO" else ""
        if not best_one.rate:
            lines.append(f"{kind}: one node answered nothing; no ratio")
            continue
        lines.append(
            f"{kind}, best cells: two nodes {best_two.rate:.0f}/s "
            f"({best_two.connections} conn.) / one node {best_one.rate:.0f}/s "
            f"({best_one.connections} conn.) = "
            f"{best_two.rate / best_one.rate:.2f}x{target}"
        )
    return lines


def ceiling_lines(cells: list[Cell]) -> list[str]:
    """Where the CPU went in the busiest cells: what limits the machine."""
    cores = os.cpu_count() or 1
    lines = []
    for cell in cells:
        if cell.kind != "SSO" or not cell.rate:
            continue
        used = sum(cell.cpu(what) for what in cell.cores)
        lines.append(
            f"SSO, {cell.nodes} node(s), {cell.connections} conn.: "
            + ", ".join(f"{what} {cell.cpu(what):.2f}" for what in cell.cores)
            + f" = {used:.2f} of {cores} cores; "
            f"{cell.cpu('idMe') / cell.rate * 1000:.2f} ms of idMe CPU per SSO, "
            f"{(used - cell.cpu('idMe')) / cell.rate * 1000:.2f} ms of everything else"
        )
    return lines


def parse_args(argv: list[str]):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=(
            "Everything runs on 127.0.0.1 and is removed at the end. Exit "
            "status: 0 when every answer was the one expected; 1 when any was "
            "not (an error status, a timeout, a failed verification, a 503 "
            "outside the database's outage, a node that did not recover by "
            "itself); 2 when an option is wrong or the cluster cannot be set "
            "up. docs/performance.md, 'Two nodes behind nginx', has the "
            "figures and how to read them."
        ),
    )
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="length of one timed run (15)"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="timed runs per cell; the median counts (3)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        nargs="+",
        default=[1, 4],
        help="SSO client connections for one node (1 4)",
    )
    parser.add_argument(
        "--two-node-connections",
        type=int,
        nargs="+",
        default=[1, 4, 8],
        help="SSO client connections for two nodes (1 4 8: more, to fill both)",
    )
    parser.add_argument(
        "--signin-connections",
        type=int,
        nargs="*",
        default=[1, 4],
        help="concurrent sign-ins, for one and for two nodes (1 4; none: skip)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=50,
        help="verify every Nth SSO Response (50)",
    )
    parser.add_argument(
        "--signin-sample",
        type=int,
        default=5,
        help="verify every Nth new session by an SSO through it (5)",
    )
    parser.add_argument(
        "--expected",
        type=float,
        default=400.0,
        help="SSO/s to pre-generate AuthnRequests for, per run (400)",
    )
    parser.add_argument(
        "--key-size",
        type=int,
        choices=[2048, 3072, 4096],
        default=3072,
        help="the IdP's RSA signing key (3072, the production default)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="waitress threads per node (default: production.ini's)",
    )
    parser.add_argument(
        "--soak-seconds",
        type=float,
        default=600.0,
        help="the soak's length on two nodes (600; 0: no soak)",
    )
    parser.add_argument(
        "--soak-load",
        type=float,
        default=0.8,
        help="the soak's rate as a share of the best two-node SSO rate (0.8)",
    )
    parser.add_argument(
        "--soak-rate",
        type=float,
        help="the soak's rate in SSO/s, instead of --soak-load of the peak",
    )
    parser.add_argument(
        "--soak-connections",
        type=int,
        default=4,
        help="the soak's client connections (4)",
    )
    parser.add_argument(
        "--restart-database-at",
        type=float,
        metavar="SECONDS",
        help="stop PostgreSQL this long into the soak, then start it again",
    )
    parser.add_argument(
        "--outage-seconds",
        type=float,
        default=5.0,
        help="how long PostgreSQL stays down in that restart (5)",
    )
    parser.add_argument(
        "--postgresql-bin",
        type=Path,
        default=PG_BIN,
        help=f"where initdb and pg_ctl are ({PG_BIN})",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary folder (logs); kept anyway after an error",
    )
    args = parser.parse_args(argv)
    counts = [*args.connections, *args.two_node_connections, *args.signin_connections]
    if min(counts, default=1) < 1 or args.soak_connections < 1:
        parser.error("connection counts must be positive")
    if args.seconds <= 0 or args.runs < 1 or args.sample < 1 or args.expected <= 0:
        parser.error("--seconds, --runs, --sample and --expected must be positive")
    if args.signin_sample < 1:
        parser.error("--signin-sample must be positive")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be positive")
    if args.soak_seconds < 0 or not 0 < args.soak_load <= 1:
        parser.error("--soak-seconds must be >= 0 and --soak-load in (0, 1]")
    if args.soak_rate is not None and args.soak_rate <= 0:
        parser.error("--soak-rate must be positive")
    if args.outage_seconds < 0:
        parser.error("--outage-seconds must be >= 0")
    if args.restart_database_at is not None and not (
        0 <= args.restart_database_at < args.soak_seconds
    ):
        parser.error("--restart-database-at must fall inside the soak")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)

    def terminated(signum, frame):
        raise KeyboardInterrupt  # the clean-up below runs, nothing is left behind

    signal.signal(signal.SIGTERM, terminated)
    folder = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    # PostgreSQL's owner and nginx's workers enter their own subfolders.
    folder.chmod(0o711)
    bench = Bench(args, folder)
    clean = True
    try:
        print(f"uptime: {uptime()}", flush=True)
        try:
            bench.start()
        except OSError as error:
            raise SetupError(f"cannot start the cluster: {error}") from error
        print(
            f"{os.cpu_count()} cores; PostgreSQL 15 (private cluster), 2 nodes "
            f"'idp-admin serve' ({args.threads or 'production.ini'} threads), "
            "nginx on deploy/nginx/idme.conf over TLS, bcrypt cost 12; "
            f"RSA-{args.key_size}; {args.runs} x {args.seconds:g} s per cell; "
            f"every {args.sample}th verified",
            flush=True,
        )
        cells: list[Cell] = []
        plan = [("SSO", 1, c) for c in args.connections]
        plan += [("SSO", 2, c) for c in args.two_node_connections]
        plan += [("sign-in", n, c) for n in (1, 2) for c in args.signin_connections]
        for kind, nodes, connections in plan:
            cell = bench.run_cell(kind, nodes, connections)
            print(cell.line(), flush=True)
            if cell.first_error:
                print(f"    first error: {cell.first_error}", flush=True)
                clean = False
            cells.append(cell)
        print()
        for line in ratio_lines(cells) + ceiling_lines(cells):
            print(line)
        if args.soak_seconds:
            peak = max(c.rate for c in cells if c.kind == "SSO" and c.nodes == 2)
            rate = args.soak_rate or args.soak_load * peak
            print(flush=True)
            clean = bench.soak(rate) and clean
        print(f"uptime: {uptime()}")
    except SetupError as error:
        print(f"bench_nodes: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench_nodes: interrupted", file=sys.stderr)
        return 130
    finally:
        bench.stop()
        # An error's cause is in the nodes' and nginx's logs: keep them.
        if args.keep or not clean:
            print(f"kept {folder} (the nodes' logs are in cluster/)", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print("result: " + ("no errors" if clean else "ERRORS (see above)"))
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
