"""Single sign-on for a signed-in user: requests/s and latency, against RSA itself.

A user who is already signed in follows an SP's link: an AuthnRequest
arrives over HTTP-Redirect and the IdP answers with the HTTP-POST page
carrying a signed Response. Here one thread (one core) sends N such
requests, each a fresh AuthnRequest with a new ID, through the real WSGI app
(``idp.config.configure``: Pyramid, pyramid_tm committing every request,
the database session, Jinja2) by calling the WSGI callable directly with a
prepared environ and the session cookie. No network and no waitress. Each
answer must be 200 with a SAMLResponse.

Two SPs are registered, both granted to the user through a role:

* *signed*: Response and Assertion signed, so 2 RSA-3072 signatures;
* *signed + encrypted*: the SP publishes an encryption key, so the
  Assertion is also encrypted (AES-256-GCM, key sent with RSA-OAEP).

For comparison, on the same machine in the same run:

* the same flow through a plain pysaml2 ``Server`` with its default
  ``xmlsec1`` subprocess backend, in-process with no HTTP stack and no
  database (``parse_authn_request`` + ``create_authn_response`` +
  ``apply_binding``), with the same IdP key and SP metadata;
* that ``Server`` again with our ``XmlsecBackend`` installed: what pysaml2
  and the signatures cost alone, without Pyramid and the database;
* ``openssl speed -seconds 5 rsa3072`` (one process): RSA-3072 sign/s;
* in-process signing rates: an XML signature of a tiny document through
  ``XmlsecBackend`` and a bare RSA-3072 PKCS#1 v1.5 signature through
  ``cryptography``.

The target (from the issue) is SSO responses/s x 2 signatures >= half of
openssl's sign/s: signing dominates, and the rest of the stack costs no
more than the signatures.

This machine is shared and its speed drifts by 10-20 % from minute to
minute, so the rows take turns: each row's requests come in blocks (10 by
default), one block of every row in turn, and each row reports its slowest
and fastest block besides the total. What else ran meanwhile is printed
too: PostgreSQL's CPU, and everything else's.

Usage::

    .venv/bin/python bench/bench_sso.py [--database sqlite|postgresql|both]
        [-n 2000] [--warmup 100] [--pysaml2-n 200] [--blocks 10]
        [--postgresql-url URL] [--profile]

PostgreSQL comes from ``--postgresql-url`` or ``IDP_TEST_POSTGRESQL_URL``;
its schema is dropped and rebuilt, so give it a database of its own.
``--database`` defaults to both when a URL is given, else SQLite.
``--profile`` adds, per database, a breakdown of 200 requests of each
variant by stage (timers around the stages; exclusive times, so they add
up; SQL also credited to the stage that asked for it) and a cProfile
summary (top 25 by cumulative time) of another 200 signed ones. Not a test.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import functools
import io
import os
import platform
import pstats
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import webtest
from lxml import etree
from sqlalchemy import event, text
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from idp.config import configure  # noqa: E402
from idp.db import make_engine  # noqa: E402
from idp.migrations import alembic_config  # noqa: E402
from idp.models import Module, Role, User  # noqa: E402
from idp.saml import keys as keystore  # noqa: E402
from idp.saml.registry import import_sp  # noqa: E402
from idp.services.passwords import BcryptPasswordService  # noqa: E402
from idp.settings import OPTIONS  # noqa: E402
from tests.app import TEST_HOST, base_settings  # noqa: E402
from tests.saml_metadata import make_sp_metadata  # noqa: E402
from tests.saml_requests import authn_request, redirect_query  # noqa: E402

# The production default (idp/settings.py), not the test suite's 2048.
KEY_SIZE = OPTIONS["idp.key_size"].default
PASSWORD = "kopi o kosong tanpa gula"  # noqa: S105 (a benchmark user's password)
NUMBER = "080512140001"
RELEASED = ["uid", "displayName", "mail", "isMemberOf"]
SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
RESPONSE_FIELD = re.compile(rb'name="SAMLResponse" value="([^"]+)"')


class Variant:
    """One SP, and what its Responses carry."""

    def __init__(self, label: str, entity_id: str, encrypted: bool) -> None:
        self.label = label
        self.entity_id = entity_id
        self.encrypted = encrypted
        self.acs_url = entity_id.rsplit("/", 1)[0] + "/acs"
        self.metadata = make_sp_metadata(entity_id, encryption=encrypted)


VARIANTS = (
    Variant("signed", "https://sp.example.org/sp", encrypted=False),
    Variant("signed + encrypted", "https://enc.example.org/sp", encrypted=True),
)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


class Result:
    """One row: requests/s over all its blocks, latency percentiles, spread."""

    def __init__(self, label: str, timed: Timed) -> None:
        self.label = label
        self.n = len(timed.latencies)
        self.rps = self.n / timed.elapsed
        self.p50 = statistics.median(timed.latencies)
        self.p99 = percentile(timed.latencies, 0.99)
        self.postgres, self.other = timed.postgres, timed.other
        self.slowest = min(timed.blocks, default=self.rps)
        self.fastest = max(timed.blocks, default=self.rps)

    def line(self) -> str:
        return (
            f"{self.label:<58} n={self.n:>5}  {self.rps:7.1f} req/s"
            f" (blocks {self.slowest:.0f}-{self.fastest:.0f})"
            f"  p50 {self.p50:6.2f} ms  p99 {self.p99:6.2f} ms"
            f"  [PostgreSQL {self.postgres:.2f}, others {self.other:.2f} cores]"
        )


def _busy_seconds() -> float:
    """CPU time spent busy since boot, all cores (from /proc/stat)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def _postgres_seconds() -> float:
    """CPU time of the running PostgreSQL server processes (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, _, rest = text.partition(" (")[2].rpartition(") ")
        if name == "postgres":
            fields = rest.split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def _own_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Timed:
    """Times a row, block by block: latencies, wall time, and the machine.

    Each ``with`` block adds to the totals and records that block's rate.
    ``postgres`` is the CPU the PostgreSQL server used meanwhile, in cores
    (its work for us, on the other core); ``other`` the rest of the machine's
    busy time minus this process and its children: other jobs competing for
    the two cores.
    """

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.blocks: list[float] = []
        self.elapsed = self._busy = self._own = self._pg = 0.0

    def __enter__(self) -> Timed:
        self._count = len(self.latencies)
        self._start = (_busy_seconds(), _own_seconds(), _postgres_seconds())
        self._began = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        elapsed = time.perf_counter() - self._began
        busy, own, pg = self._start
        self.elapsed += elapsed
        self._busy += _busy_seconds() - busy
        self._own += _own_seconds() - own
        self._pg += _postgres_seconds() - pg
        if len(self.latencies) > self._count:
            self.blocks.append((len(self.latencies) - self._count) / elapsed)

    @property
    def postgres(self) -> float:
        return self._pg / self.elapsed

    @property
    def other(self) -> float:
        return max(0.0, self._busy - self._own - self._pg) / self.elapsed

    def call(self, function, *args):
        begun = time.perf_counter()
        value = function(*args)
        self.latencies.append((time.perf_counter() - begun) * 1000)
        return value


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# --------------------------------------------------------------------------
# The app, its SPs and a signed-in user


def fresh_database(url: str):
    """An engine on ``url``, its schema at head: on PostgreSQL, emptied first."""
    from alembic import command

    engine = make_engine({"sqlalchemy.url": url})
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    return engine


def build_app(url: str, folder: Path):
    engine = fresh_database(url)
    keypair = keystore.generate(folder / "certs", TEST_HOST, key_size=KEY_SIZE)
    # The test suite's settings (development.ini, scratch key folders), with
    # the production key size. Base URL https://idp.test, which is where
    # tests/saml_requests.py addresses its requests.
    settings = base_settings(folder)
    settings.update(
        {
            "idp.key_size": str(KEY_SIZE),
            "sqlalchemy.url": url,
            "idp.dbengine": engine,
        }
    )
    app = configure(settings).make_wsgi_app()
    return app, engine, keypair


def bench_user(role) -> User:
    """The benchmark's signed-in user (``NUMBER``, ``PASSWORD``), holding ``role``."""
    user = User(
        identifier_kind="mykad",
        identifier=NUMBER,
        email="cikgu.bench@example.com.my",
        full_name="Cikgu Bench binti Ujian",
        phone="+60123456789",
        category="educator",
        institution="SK Taman Melati",
        locale="ms",
        security_image="cat",
        security_phrase="Nasi lemak kegemaran saya",
        password_hash=BcryptPasswordService(rounds=4).hash(PASSWORD),
    )
    user.roles.append(role)
    return user


def register(engine) -> None:
    """A module, a role granting it, both SPs in that module, and the user."""
    with Session(engine) as session, session.begin():
        module = Module(code="emis", display_name_ms="EMIS", display_name_en="EMIS")
        role = Role(name="guru", display_name_ms="Guru", display_name_en="Teacher")
        role.modules.append(module)
        session.add_all([module, role])
        session.flush()
        for variant in VARIANTS:
            sp = import_sp(session, variant.metadata, module_code="emis")
            sp.attributes_released = list(RELEASED)
            assert sp.encrypt_assertion == variant.encrypted
        session.add(bench_user(role))


def sign_in(app) -> str:
    """The three sign-in steps once, through WebTest; returns the session cookie."""
    client = webtest.TestApp(
        app,
        extra_environ={
            "HTTP_HOST": TEST_HOST,
            "HTTP_ORIGIN": f"https://{TEST_HOST}",
            "wsgi.url_scheme": "https",
            "REMOTE_ADDR": "192.0.2.10",
        },
    )
    page = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post("/login", {"csrf_token": token, "identifier": NUMBER}, status=303)
    client.post("/login/image", {"csrf_token": token, "confirm": "y"}, status=303)
    client.post(
        "/login/password", {"csrf_token": token, "password": PASSWORD}, status=303
    )
    return client.cookies["idp_session"]


def queries_for(variant: Variant, count: int) -> list[str]:
    """Fresh AuthnRequests (new ID, current IssueInstant), Redirect-encoded."""
    return [
        redirect_query(
            authn_request(issuer=variant.entity_id, acs_url=variant.acs_url),
            relay_state="/kelas/5-bestari",
        )
        for _ in range(count)
    ]


class Caller:
    """Calls the WSGI app directly, as waitress would, with the session cookie."""

    def __init__(self, app, cookie: str) -> None:
        self.app = app
        self.template = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "",
            "PATH_INFO": "/saml/sso/redirect",
            "SERVER_NAME": TEST_HOST,
            "SERVER_PORT": "443",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": TEST_HOST,
            "HTTP_COOKIE": f"idp_session={cookie}",
            "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64) bench_sso",
            "HTTP_ACCEPT_LANGUAGE": "ms",
            "REMOTE_ADDR": "192.0.2.10",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        self.status = ""

    def _start_response(self, status, headers, exc_info=None):
        self.status = status

    def __call__(self, query: str) -> bytes:
        environ = dict(self.template)
        environ["QUERY_STRING"] = query
        environ["wsgi.input"] = io.BytesIO()
        chunks = self.app(environ, self._start_response)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if not self.status.startswith("200"):
            raise AssertionError(f"SSO answered {self.status}: {body[:300]!r}")
        match = RESPONSE_FIELD.search(body)
        if match is None:
            raise AssertionError("no SAMLResponse in the page")
        return match.group(1)


def check_response(encoded: bytes, variant: Variant) -> str:
    """The Response is a success, signed as promised; a one-line description."""
    xml = base64.b64decode(encoded)
    root = etree.fromstring(xml)
    status = root.find(f"{{{SAMLP}}}Status/{{{SAMLP}}}StatusCode").get("Value")
    assert status.endswith(":Success"), status
    assert root.find(f"{{{DS}}}Signature") is not None, "Response not signed"
    encrypted = root.find(f"{{{SAML}}}EncryptedAssertion")
    if variant.encrypted:
        assert encrypted is not None, "Assertion not encrypted"
        assert root.find(f"{{{SAML}}}Assertion") is None
        # The Assertion's signature is inside the ciphertext.
        return f"{len(xml)} bytes, Response signed, Assertion encrypted"
    assert encrypted is None
    assertion = root.find(f"{{{SAML}}}Assertion")
    assert assertion.find(f"{{{DS}}}Signature") is not None, "Assertion not signed"
    attributes = len(list(assertion.iter(f"{{{SAML}}}Attribute")))
    return f"{len(xml)} bytes, Response and Assertion signed, {attributes} attributes"


class Row:
    """A flow to measure: ``answer`` turns a Redirect query into a SAMLResponse."""

    def __init__(self, label: str, variant: Variant, answer) -> None:
        self.label = label
        self.variant = variant
        self.answer = answer
        self.timed = Timed()


def measure(rows: list[Row], n: int, warmup: int, blocks: int) -> list[Result]:
    """``n`` requests per row after ``warmup``, the rows taking turns in blocks.

    Interleaving spreads the machine's slow and fast moments over every
    row alike, so rows compare fairly even when their absolute rates drift.
    """
    described = {}
    for row in rows:
        described[row.label] = check_response(
            row.answer(queries_for(row.variant, 1)[0]), row.variant
        )
        for query in queries_for(row.variant, warmup):
            row.answer(query)
    size = -(-n // blocks)
    done = 0
    while done < n:
        count = min(size, n - done)
        for row in rows:
            queries = queries_for(row.variant, count)
            with row.timed as timed:
                for query in queries:
                    timed.call(row.answer, query)
        done += count
    results = []
    for row in rows:
        result = Result(row.label, row.timed)
        print(result.line())
        print(f"    ({described[row.label]})", flush=True)
        results.append(result)
    return results


def count_statements(engine, call: Caller, variant: Variant, n: int = 20) -> None:
    """SQL statements per SSO request, and those of one request."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    queries = queries_for(variant, n + 1)
    call(queries[0])
    event.listen(engine, "before_cursor_execute", record)
    try:
        call(queries[1])
        one = list(seen)
        for query in queries[2:]:
            call(query)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    print(
        f"SQL per SSO request ({variant.label}): {len(seen) / n:.1f} statements"
        " through cursor.execute (the COMMIT is not one of them); one request's:"
    )
    for statement in one:
        print("    " + " ".join(statement.split())[:110])


# --------------------------------------------------------------------------
# pysaml2 on its own


def pysaml2_server(settings, keypair, backend: str):
    """A pysaml2 ``Server`` with our IdP configuration, key and both SPs.

    ``backend`` "xmlsec1" is pysaml2's default (one xmlsec1 process per
    operation); "XmlsecBackend" installs ours, as the app does.
    """
    from saml2.config import IdPConfig
    from saml2.server import Server

    from idp.saml.config import config_dict
    from idp.saml.crypto import install_security_context

    conf = config_dict(settings, keypair)
    conf["metadata"] = {"inline": [v.metadata.decode() for v in VARIANTS]}
    conf["crypto_backend"] = "xmlsec1" if backend == "xmlsec1" else "XMLSecurity"
    config = IdPConfig()
    config.load(conf)
    server = Server(config=config)
    if backend != "xmlsec1":
        install_security_context(server)
    return server


def pysaml2_sso(server, variant: Variant, query: str) -> bytes:
    """What a pysaml2 IdP does for a signed-in user, minus the web framework."""
    from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
    from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
    from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

    fields = parse_qs(query)
    relay_state = fields["RelayState"][0]
    request = server.parse_authn_request(
        fields["SAMLRequest"][0], BINDING_HTTP_REDIRECT
    )
    args = server.response_args(request.message, [BINDING_HTTP_POST])
    name_id = NameID(
        format=NAMEID_FORMAT_PERSISTENT,
        text="Qm9va3Mgb2YgdGhlIGJlbmNoIG5hbWVJRCB2YWx1ZQ",
        name_qualifier=server.config.entityid,
        sp_name_qualifier=variant.entity_id,
    )
    response = server.create_authn_response(
        {
            "uid": ["8f0c5a6e-2a4b-4c3e-9d1f-7b6a5c4d3e2f"],
            "displayName": ["Cikgu Bench binti Ujian"],
            "mail": ["cikgu.bench@example.com.my"],
            "isMemberOf": ["guru"],
        },
        name_id=name_id,
        authn={
            "class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:"
            "PasswordProtectedTransport",
            "authn_instant": int(time.time()),
        },
        sign_response=True,
        sign_assertion=True,
        encrypt_assertion=variant.encrypted,
        encrypt_assertion_self_contained=True,
        sign_alg=SIG_RSA_SHA256,
        digest_alg=DIGEST_SHA256,
        **args,
    )
    http = server.apply_binding(
        BINDING_HTTP_POST,
        str(response),
        args["destination"],
        relay_state,
        response=True,
    )
    match = RESPONSE_FIELD.search(http["data"].encode())
    if match is None:
        raise AssertionError("pysaml2 made no SAMLResponse")
    return match.group(1)


# --------------------------------------------------------------------------
# RSA itself


def openssl_speed(seconds: int) -> tuple[float, str, float]:
    """sign/s of ``openssl speed rsa3072`` (one process), its line, others' load."""
    openssl = shutil.which("openssl")
    if openssl is None:
        sys.exit("openssl is not installed")
    with Timed() as load:
        out = subprocess.run(
            [openssl, "speed", "-seconds", str(seconds), "rsa3072"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    match = re.search(
        r"^rsa\s+3072 bits\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", out, re.MULTILINE
    )
    if match is None:
        sys.exit(f"cannot read openssl speed's output:\n{out}")
    version = subprocess.run(
        [openssl, "version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    line = f"{version}: {match.group(0).strip()}"
    return float(match.group(1)), line, load.other


def rate(operation: Callable[[], object], seconds: float) -> tuple[float, float]:
    """Operations per second over ``seconds``, and others' load meanwhile."""
    operation()
    count = 0
    with Timed() as load:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            operation()
            count += 1
    return count / load.elapsed, load.other


TINY_ID = "_bench_tiny_0001"
TINY_RESPONSE = f"""\
<samlp:Response xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="{TINY_ID}" \
Version="2.0" IssueInstant="2026-11-25T00:00:00Z">\
<saml:Issuer>https://idp.test/saml/metadata</saml:Issuer>\
<ds:Signature xmlns:ds="{DS}"><ds:SignedInfo>\
<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>\
<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>\
<ds:Reference URI="#{TINY_ID}"><ds:Transforms>\
<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>\
<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms>\
<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>\
<ds:DigestValue/></ds:Reference></ds:SignedInfo>\
<ds:SignatureValue/></ds:Signature>\
<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/>\
</samlp:Status></samlp:Response>"""


def xmlsec_sign_rate(key_file: str, seconds: float) -> tuple[float, float]:
    """XmlsecBackend.sign_statement on a tiny Response: RSA plus a little XML."""
    from idp.saml.crypto import XmlsecBackend

    backend = XmlsecBackend()
    name = f"{SAMLP}:Response"
    return rate(
        lambda: backend.sign_statement(TINY_RESPONSE, name, key_file, TINY_ID),
        seconds,
    )


def cryptography_sign_rate(key_file: str, seconds: float) -> tuple[float, float]:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), None)
    data = secrets.token_bytes(64)
    return rate(lambda: key.sign(data, padding.PKCS1v15(), hashes.SHA256()), seconds)


# --------------------------------------------------------------------------
# Where the time goes


SQL_STAGES = ("orm", "driver")


class Breakdown:
    """Exclusive wall-clock time per stage: each moment goes to the innermost.

    SQLAlchemy time is also credited to the stage that asked for it (the
    nearest enclosing stage that is not SQLAlchemy), with its statements.
    """

    def __init__(self) -> None:
        self.stack: list[list] = []
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.sql_seconds: dict[str, float] = defaultdict(float)
        self.statements: dict[str, int] = defaultdict(int)

    def _owner(self, depth: int) -> str:
        for label, _ in reversed(self.stack[:depth]):
            if label not in SQL_STAGES:
                return label
        return "request"

    def _charge(self, now: float) -> None:
        label, resumed = self.stack[-1]
        spent = now - resumed
        self.seconds[label] += spent
        if label in SQL_STAGES:
            self.sql_seconds[self._owner(len(self.stack) - 1)] += spent

    def enter(self, label: str) -> None:
        now = time.perf_counter()
        if self.stack:
            self._charge(now)
        self.stack.append([label, now])
        self.calls[label] += 1
        if label == "driver":
            self.statements[self._owner(len(self.stack) - 1)] += 1

    def leave(self) -> None:
        now = time.perf_counter()
        self._charge(now)
        self.stack.pop()
        if self.stack:
            self.stack[-1][1] = now

    def wrap(self, label: str, function):
        def timed(*args, **kwargs):
            self.enter(label)
            try:
                return function(*args, **kwargs)
            finally:
                self.leave()

        timed.__wrapped__ = function
        return timed


STAGES = (
    ("RSA sign (libxmlsec ctx.sign: c14n, digest, RSA-3072)", "rsa"),
    ("XmlsecBackend signing around it (templates, parse, checks, serialise)", "sign"),
    ("XmlsecBackend encrypting (AES-256-GCM, RSA-OAEP, XML)", "encrypt"),
    ("Response building: pysaml2 objects, to_string, lxml parse/tostring", "build"),
    ("AuthnRequest: decode, parse, checks (receive_authn_request)", "receive"),
    ("SSO policy: NameID, attributes, participant (assertion_for)", "policy"),
    ("role gate (may_reach) and finish", "gate"),
    ("ServerCache.get (registry generation)", "server"),
    ("session cookie: load and save (DatabaseSession)", "session"),
    ("security policy: the signed-in user (identity)", "identity"),
    ("POST page: Pyramid renderer around the template", "render"),
    ("POST page: Jinja2 Template.render (page and layout)", "template"),
    ("SQLAlchemy ORM (execute/scalar/get/flush, minus the driver)", "orm"),
    ("DB driver: cursor.execute", "driver"),
    ("transaction commit (pyramid_tm, minus flush/SQL)", "commit"),
    ("rest: Pyramid, tweens, WebOb, security policy, views", "request"),
)


@contextlib.contextmanager
def instrumented(engine, breakdown: Breakdown):
    """Put timers around the stages (bench only; the app's code is unchanged)."""
    import jinja2
    import transaction
    from sqlalchemy.orm import Session as OrmSession

    from idp.saml import crypto, sso
    from idp.saml import requests as saml_requests
    from idp.saml import response as responses
    from idp.saml.server import ServerCache
    from idp.security import SessionSecurityPolicy
    from idp.sessions import DatabaseSession
    from idp.views import saml as saml_views

    class TimedContext:
        def __init__(self, ctx) -> None:
            object.__setattr__(self, "_ctx", ctx)

        def sign(self, node):
            breakdown.enter("rsa")
            try:
                return self._ctx.sign(node)
            finally:
                breakdown.leave()

        def __getattr__(self, name):
            return getattr(self._ctx, name)

        def __setattr__(self, name, value):
            setattr(self._ctx, name, value)

    patches = [
        # Whichever of these the code at hand uses (it has changed over time).
        (crypto.XmlsecBackend, "sign_statement", "sign"),
        (crypto.XmlsecBackend, "sign_element", "sign"),
        (crypto.XmlsecBackend, "encrypt_assertion", "encrypt"),
        (crypto.XmlsecBackend, "encrypt_element", "encrypt"),
        (responses, "build", "build"),
        (saml_requests, "receive_authn_request", "receive"),
        (sso, "assertion_for", "policy"),
        (sso, "may_reach", "gate"),
        (sso, "finish", "gate"),
        (ServerCache, "get", "server"),
        (DatabaseSession, "_load", "session"),
        (DatabaseSession, "save", "session"),
        (SessionSecurityPolicy, "_load", "identity"),
        (saml_views, "render_to_response", "render"),
        (jinja2.Template, "render", "template"),
        (OrmSession, "execute", "orm"),
        (OrmSession, "scalar", "orm"),
        (OrmSession, "scalars", "orm"),
        (OrmSession, "get", "orm"),
        (OrmSession, "flush", "orm"),
        (transaction.TransactionManager, "commit", "commit"),
    ]
    saved = []
    for owner, name, label in patches:
        original = vars(owner).get(name)
        if original is None:
            continue
        saved.append((owner, name, original))
        setattr(owner, name, breakdown.wrap(label, original))
    original_context = crypto.XmlsecBackend._signature_context
    crypto.XmlsecBackend._signature_context = lambda self, key: TimedContext(
        original_context(self, key)
    )

    def before(*args):
        breakdown.enter("driver")

    def after(*args):
        breakdown.leave()

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
        crypto.XmlsecBackend._signature_context = original_context
        for owner, name, original in saved:
            setattr(owner, name, original)


def breakdown_of(engine, call: Caller, variant: Variant, n: int) -> None:
    breakdown = Breakdown()
    queries = queries_for(variant, n)
    with instrumented(engine, breakdown), Timed() as load:
        for query in queries:
            breakdown.enter("request")
            try:
                call(query)
            finally:
                breakdown.leave()
    total = sum(breakdown.seconds.values())
    print(
        f"\nWhere the time goes: {n} {variant.label} SSO requests, "
        f"{load.elapsed / n * 1000:.2f} ms each with the timers "
        f"(PostgreSQL {load.postgres:.2f}, others {load.other:.2f} cores; "
        "exclusive time per stage, the stages add up to the whole):"
    )
    for title, label in STAGES:
        seconds = breakdown.seconds.get(label, 0.0)
        calls = breakdown.calls.get(label, 0) / n
        print(
            f"  {title:<68} {seconds / n * 1000:6.3f} ms  {seconds / total:6.1%}"
            f"  ({calls:.1f} calls)"
        )
    print("  SQLAlchemy (ORM + driver) by the stage that asked for it:")
    titles = {label: title.split(" (")[0] for title, label in STAGES}
    for label, seconds in sorted(breakdown.sql_seconds.items(), key=lambda i: -i[1]):
        print(
            f"    {titles.get(label, label):<66} {seconds / n * 1000:6.3f} ms"
            f"  {breakdown.statements.get(label, 0) / n:4.1f} statements"
        )


def profile(call: Caller, variant: Variant, n: int) -> None:
    queries = queries_for(variant, n)
    profiler = cProfile.Profile()
    profiler.enable()
    for query in queries:
        call(query)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(25)
    print(f"\ncProfile of {n} {variant.label} SSO requests, top 25 by cumulative:")
    print(out.getvalue())
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(15)
    print("... and the top 15 by time inside the function itself:")
    print(out.getvalue())


# --------------------------------------------------------------------------


def run_reference(settings, keypair, args) -> list[Result]:
    print("\npysaml2 Server alone (no HTTP stack, no database), same key and SPs:")
    results = []
    for backend, label, n in (
        ("xmlsec1", "pysaml2 + xmlsec1 subprocess (default)", args.pysaml2_n),
        ("XmlsecBackend", "pysaml2 + our XmlsecBackend", args.n),
    ):
        if backend == "xmlsec1" and shutil.which("xmlsec1") is None:
            print(
                "  (no xmlsec1 binary: apt-get install xmlsec1, as scripts/setup does)"
            )
            continue
        server = pysaml2_server(settings, keypair, backend)
        rows = [
            Row(
                f"{label}, {variant.label}",
                variant,
                functools.partial(pysaml2_sso, server, variant),
            )
            for variant in VARIANTS
        ]
        warmup = min(args.warmup, max(5, n // 20))
        results += measure(rows, n, warmup, args.blocks)
    print("\nSignature rates, RSA-3072, one core:")
    key_file = str(keypair.key_file)
    xmlsec_rate, other = xmlsec_sign_rate(key_file, 5)
    print(
        f"  XmlsecBackend.sign_statement, tiny document  {xmlsec_rate:8.1f} sign/s"
        f"  (others used {other:.2f} cores)"
    )
    crypto_rate, other = cryptography_sign_rate(key_file, 5)
    print(
        f"  cryptography RSA PKCS#1 v1.5 SHA-256         {crypto_rate:8.1f} sign/s"
        f"  (others used {other:.2f} cores)"
    )
    args.rates = {"xmlsec": xmlsec_rate, "cryptography": crypto_rate}
    return results


def run(targets: list[tuple[str, str]], args) -> tuple[list[Result], list[Result]]:
    """Our rows on every database, interleaved; then the pysaml2 rows."""
    with contextlib.ExitStack() as stack:
        apps = []
        for label, url in targets:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            app, engine, keypair = build_app(url, folder)
            stack.callback(engine.dispose)
            register(engine)
            apps.append((label, app, engine, keypair, Caller(app, sign_in(app))))
            print(f"{label}: {engine.dialect.name} {engine.url.database}")
        print(
            f"\nidMe, one thread, straight into the WSGI app; rows take turns "
            f"in {args.blocks} blocks:"
        )
        rows = [
            Row(f"idMe, {label}, {variant.label}", variant, call)
            for label, _app, _engine, _keypair, call in apps
            for variant in VARIANTS
        ]
        ours = measure(rows, args.n, args.warmup, args.blocks)
        for label, _app, engine, _keypair, call in apps:
            print(f"\n{label}:")
            for variant in VARIANTS:
                count_statements(engine, call, variant)
            if args.profile:
                for variant in VARIANTS:
                    breakdown_of(engine, call, variant, 200)
                profile(call, VARIANTS[0], 200)
        # Same IdP key and settings; the key files live in the first folder.
        _label, app, _engine, keypair, _call = apps[0]
        reference = run_reference(app.registry.settings, keypair, args)
    return ours, reference


def revision() -> str:
    """Where the app's code came from: the folder, its commit, and local changes.

    Read-only git; a folder exported with ``git archive`` has no history and
    says so.
    """
    import idp

    source = Path(idp.__file__).resolve().parent.parent
    git = shutil.which("git")
    if git is None or not (source / ".git").exists():
        return f"{source} (not a git checkout)"
    head = subprocess.run(
        [git, "-C", str(source), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    # --no-optional-locks: git status must not even refresh the index.
    status = ["status", "--porcelain", "--", "idp", "templates"]
    dirty = subprocess.run(
        [git, "--no-optional-locks", "-C", str(source), *status],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    changes = " with uncommitted changes in idp/ or templates/" if dirty else ""
    return f"{source} at {head or '?'}{changes}"


def machine() -> None:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    from importlib.metadata import version as installed

    import lxml.etree
    import sqlalchemy
    import xmlsec

    xmlsec1 = shutil.which("xmlsec1")
    version = "absent"
    if xmlsec1:
        version = subprocess.run(
            [xmlsec1, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    print(
        f"machine: {os.cpu_count()} CPUs, {model}, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )
    print(
        f"pysaml2 {installed('pysaml2')}, "
        f"python-xmlsec {xmlsec.__version__} / libxmlsec "
        f"{'.'.join(map(str, xmlsec.get_libxmlsec_version()))}, "
        f"lxml {lxml.etree.__version__}, SQLAlchemy {sqlalchemy.__version__}, "
        f"{version}"
    )
    print(f"code: {revision()}; IdP key: RSA-{KEY_SIZE}; load average {loadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database", choices=["sqlite", "postgresql", "both"], default=None
    )
    parser.add_argument("-n", type=int, default=2000, help="timed SSO requests")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument(
        "--pysaml2-n",
        type=int,
        default=200,
        help="timed requests through pysaml2's xmlsec1 backend (slow)",
    )
    parser.add_argument(
        "--postgresql-url", default=os.environ.get("IDP_TEST_POSTGRESQL_URL")
    )
    parser.add_argument(
        "--blocks",
        type=int,
        default=10,
        help="each row's requests come in this many blocks, rows taking turns",
    )
    parser.add_argument("--openssl-seconds", type=int, default=5)
    parser.add_argument(
        "--profile", action="store_true", help="stage breakdown and cProfile"
    )
    args = parser.parse_args()
    database = args.database or ("both" if args.postgresql_url else "sqlite")
    targets = []
    if database in ("sqlite", "both"):
        folder = Path(tempfile.mkdtemp())
        targets.append(("SQLite", f"sqlite:///{folder / 'bench.sqlite'}"))
    if database in ("postgresql", "both"):
        if not args.postgresql_url:
            sys.exit("give --postgresql-url or set IDP_TEST_POSTGRESQL_URL")
        targets.append(("PostgreSQL", args.postgresql_url))

    machine()
    print(f"\nopenssl speed -seconds {args.openssl_seconds} rsa3072 ...", flush=True)
    openssl_rate, openssl_line, other = openssl_speed(args.openssl_seconds)
    print(f"  {openssl_line}  (others used {other:.2f} cores)")

    print()
    ours, reference = run(targets, args)

    print(f"\nload average at the end: {loadavg()}")
    print(
        "\n| Flow | n | requests/s | slowest-fastest block | p50 ms | p99 ms "
        "| PostgreSQL cores | other cores |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for result in ours + reference:
        print(
            f"| {result.label} | {result.n} | {result.rps:.1f} "
            f"| {result.slowest:.0f}-{result.fastest:.0f} "
            f"| {result.p50:.2f} | {result.p99:.2f} "
            f"| {result.postgres:.2f} | {result.other:.2f} |"
        )
    print("\n| RSA-3072 signatures, one core | sign/s |")
    print("|---|---:|")
    print(f"| `openssl speed rsa3072` (system OpenSSL) | {openssl_rate:.1f} |")
    print(f"| XmlsecBackend, tiny document | {args.rates['xmlsec']:.1f} |")
    print(f"| `cryptography`, bare RSA | {args.rates['cryptography']:.1f} |")

    target = 0.5 * openssl_rate
    print(
        f"\nTarget: responses/s x 2 signatures >= 0.5 x openssl sign/s "
        f"= {target:.1f} signatures/s"
    )
    for result in ours:
        signatures = result.rps * 2
        verdict = "PASS" if signatures >= target else "FAIL"
        print(
            f"  {verdict}  {result.label}: {result.rps:.1f} x 2 = "
            f"{signatures:.1f} signatures/s "
            f"({signatures / openssl_rate:.0%} of openssl's {openssl_rate:.1f})"
        )
    strict = 0.5 * args.rates["xmlsec"]
    print(
        "  For reference, against the in-process XML signature rate "
        f"({args.rates['xmlsec']:.1f}/s, half = {strict:.1f}):"
    )
    for result in ours:
        signatures = result.rps * 2
        print(
            f"    {'pass' if signatures >= strict else 'fail'}  {result.label}: "
            f"{signatures:.1f} signatures/s "
            f"({signatures / args.rates['xmlsec']:.0%})"
        )


if __name__ == "__main__":
    main()
