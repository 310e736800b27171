"""nginx + N web nodes + PostgreSQL (+ Redis) on 127.0.0.1: the production shape, in a test.

``Cluster`` builds, in a scratch folder:

- its own PostgreSQL database, made from ``IDP_TEST_POSTGRESQL_URL`` (the
  role has CREATEDB) and dropped afterwards;
- an ini that is ``production.ini`` with only what a test machine changes:
  the base URL (nginx's port on 127.0.0.1), the keys and metadata folders,
  SMTP to the test sink (``tests/smtp.py``: STARTTLS, AUTH, its own CA in
  ``mail.ca_file``), 2048-bit keys and bcrypt cost 4 (speed; production
  accepts both), and optionally Redis counters. Secrets and the database
  URL come from the environment, as production wants (``env``). Production
  refuses nothing the tests need: the ini stays in production mode;
- ``idp-admin db upgrade`` and ``keys generate``;
- N nodes, each ``idp-admin INI serve`` (``tests/nodes.py``);
- nginx, the Debian binary, on the shipped site ``deploy/nginx/idme.conf``
  rendered for 127.0.0.1 (``tests/nginx_site.py``) with a self-signed
  certificate, run as the current user on free high ports.

Its methods stop, kill (any signal) and start nodes, mark a node down in
the upstream and reload nginx, run ``idp-admin`` against the ini, start
and stop mail deliverers, and make clients: ``browser()`` (WebTest over
HTTPS through nginx, or straight to one node, keeping cookies, so the
helpers of ``tests/signin.py`` work unchanged) and ``session()`` (a
``requests.Session`` trusting the certificate).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import secrets
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import webtest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine, make_url

from tests.app import ROOT
from tests.cli import IDP_ADMIN, admin
from tests.nginx_site import NGINX, Nginx, Ports, main_conf, render_site
from tests.nodes import HOST, NodeProcess, free_port
from tests.served import WireProxy
from tests.smtp import SMTPServer, make_certificate

POSTGRESQL_ENV = "IDP_TEST_POSTGRESQL_URL"
REQUIRE_NGINX_ENV = "IDP_TEST_REQUIRE_NGINX"
PRODUCTION_INI = ROOT / "production.ini"
#: Graceful stop of a node: as the systemd unit gives it.
GRACE_SECONDS = 20


def missing_reason() -> str | None:
    """Why a cluster cannot be built here, or None."""
    if not os.environ.get(POSTGRESQL_ENV):
        return f"the cluster needs PostgreSQL: {POSTGRESQL_ENV} is not set"
    if not Path(NGINX).is_file():
        return "nginx is not installed (Debian package nginx; scripts/setup test)"
    return None


def _replace(text: str, name: str, value: str) -> str:
    """Set the line ``name = value`` (commented out or not), else add it to ``[app:main]``."""
    line = re.compile(rf"^#? ?{re.escape(name)} =.*$", re.MULTILINE)
    if line.search(text):
        return line.sub(lambda _m: f"{name} = {value}", text, count=1)
    return text.replace("[app:main]\n", f"[app:main]\n{name} = {value}\n", 1)


def cluster_ini(
    folder: Path,
    https_port: int,
    smtp: SMTPServer,
    redis_url: str | None,
    overrides: dict[str, str],
) -> str:
    """production.ini for a cluster on 127.0.0.1 (see the module's docstring)."""
    text = PRODUCTION_INI.read_text()
    settings = {
        "idp.base_url": f"https://{HOST}:{https_port}",
        "idp.certs_dir": str(folder / "certs"),
        "idp.metadata_dir": str(folder / "metadata"),
        # The ini is written in the scratch folder, so %(here)s is not the
        # checkout: the templates are named where they are.
        "jinja2.directories": str(ROOT / "templates"),
        "idp.key_size": "2048",
        "idp.bcrypt_rounds": "4",
        "mail.host": HOST,
        "mail.port": str(smtp.port),
        "mail.ca_file": str(smtp.cert_file),
        "mail.timeout": "10",
        "mail.poll_seconds": "1",
        "mail.deliver_in_process": "false",
        # The deliverer's other duties (purging, metadata sources) are not
        # what these tests look at; every interval long, none of them
        # interferes.
        "idp.purge.interval_seconds": "3600",
    }
    if redis_url is not None:
        settings["ratelimit.storage"] = redis_url
    settings.update(overrides)
    for name, value in settings.items():
        text = _replace(text, name, value)
    return text


class Cluster:
    """A running cluster; use ``build`` (a context manager)."""

    def __init__(
        self, folder: Path, nodes: int, redis_url: str | None, settings: dict[str, str]
    ) -> None:
        self.folder = folder
        self.redis_url = redis_url
        self.settings = settings
        self.ports = Ports(
            https=free_port(),
            http=free_port(),
            nodes=tuple(free_port() for _ in range(nodes)),
        )
        self.down: set[int] = set()
        self.deliverers: list[subprocess.Popen] = []
        self.database_url = ""
        self.engine: Engine | None = None
        self.nodes: list[NodeProcess] = []
        self.nginx: Nginx | None = None
        self.smtp: SMTPServer | None = None

    # --- building -----------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def build(
        cls,
        folder: Path,
        *,
        nodes: int = 2,
        redis_url: str | None = None,
        settings: dict[str, str] | None = None,
    ) -> Iterator[Cluster]:
        """Build and start a cluster in ``folder``; tear it all down after.

        ``settings`` override lines of the ini by name (smaller limits;
        ``threads`` of ``[server:main]`` too); a name not in the ini is added
        to ``[app:main]``.
        """
        reason = missing_reason()
        if reason is not None:
            raise RuntimeError(reason)
        folder.mkdir(parents=True, exist_ok=True)
        cluster = cls(folder, nodes, redis_url, settings or {})
        with contextlib.ExitStack() as stack:
            stack.callback(cluster._drop_database)
            cluster._create_database()
            cluster._start_smtp()
            stack.callback(cluster.smtp.stop)
            cluster._write_ini()
            cluster.ok("db", "upgrade")
            cluster.ok("keys", "generate")
            stack.callback(cluster._stop_everything)
            cluster._start_nodes()
            cluster._start_nginx()
            yield cluster

    def _create_database(self) -> None:
        base = make_url(os.environ[POSTGRESQL_ENV])
        name = f"idp_cluster_{secrets.token_hex(4)}"
        admin_engine = create_engine(base, isolation_level="AUTOCOMMIT")
        try:
            with admin_engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin_engine.dispose()
        self.database_url = base.set(database=name).render_as_string(
            hide_password=False
        )
        self.engine = create_engine(self.database_url, pool_size=5)

    def _drop_database(self) -> None:
        if not self.database_url:
            return
        if self.engine is not None:
            self.engine.dispose()
        url = make_url(self.database_url)
        admin_engine = create_engine(
            make_url(os.environ[POSTGRESQL_ENV]), isolation_level="AUTOCOMMIT"
        )
        try:
            with admin_engine.connect() as conn:
                conn.execute(
                    text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
                )
        finally:
            admin_engine.dispose()

    def _start_smtp(self) -> None:
        tls = self.folder / "smtp"
        tls.mkdir()
        cert, key = make_certificate(tls)
        self.smtp = SMTPServer(cert, key, implicit_tls=False)
        self.smtp.start()

    def _write_ini(self) -> None:
        assert self.smtp is not None
        self.ini = self.folder / "idme.ini"
        self.ini.write_text(
            cluster_ini(
                self.folder, self.ports.https, self.smtp, self.redis_url, self.settings
            )
        )
        self.env = {
            "IDP_SESSION_SECRET": secrets.token_urlsafe(48),
            "IDP_HMAC_KEY": secrets.token_urlsafe(48),
            "IDP_DATABASE_URL": self.database_url,
            "IDP_SMTP_PASSWORD": self.smtp.settings()["mail.smtp_password"],
        }

    def _start_nodes(self) -> None:
        self.nodes = [
            NodeProcess(
                self.ini,
                port,
                grace=GRACE_SECONDS,
                log=self.folder / f"node-{number}.log",
                env=self.env,
            )
            for number, port in enumerate(self.ports.nodes)
        ]
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            node.wait_for("serving on", 60)

    def _start_nginx(self) -> None:
        tls = self.folder / "tls"
        tls.mkdir()
        self.cert_file, key_file = make_certificate(tls)
        self._key_file = key_file
        nginx = self.folder / "nginx"
        (nginx / "temp").mkdir(parents=True)
        (nginx / "log").mkdir()
        self.site = nginx / "idme.conf"
        self._write_site()
        conf = nginx / "nginx.conf"
        conf.write_text(main_conf(nginx, self.site))
        self.nginx = Nginx(conf, self.ports).start()

    def _write_site(self) -> None:
        text = render_site(
            self.ports, self.cert_file, self._key_file, self.folder / "nginx" / "log"
        )
        for number in self.down:
            port = self.ports.nodes[number]
            line = re.compile(rf"^(\s*server {HOST}:{port}\b[^;]*);", re.MULTILINE)
            text, found = line.subn(r"\1 down;", text)
            assert found == 1, f"no upstream line for node {number}"
        self.site.write_text(text)

    def _stop_everything(self) -> None:
        for process in self.deliverers:
            _stop(process)
        if self.nginx is not None:
            self.nginx.stop()
        for node in self.nodes:
            node.kill()

    # --- nodes and nginx ------------------------------------------------------

    def node(self, number: int) -> NodeProcess:
        return self.nodes[number]

    def stop_node(self, number: int, timeout: float = GRACE_SECONDS + 10) -> int | None:
        """SIGTERM (graceful) and wait; the exit status."""
        return self.nodes[number].stop(timeout)

    def signal_node(self, number: int, signum: int = signal.SIGKILL) -> None:
        self.nodes[number].signal(signum)

    def start_node(self, number: int) -> None:
        self.nodes[number].start()

    def set_down(self, number: int, down: bool = True) -> None:
        """Mark node ``number`` down (or up again) in the upstream; reload nginx.

        Returns once nginx's old workers are gone, so every request from
        then on is routed by the new upstream.
        """
        if down:
            self.down.add(number)
        else:
            self.down.discard(number)
        self._write_site()
        self.reload_nginx()

    def reload_nginx(self, timeout: float = 20) -> None:
        assert self.nginx is not None and self.nginx.process is not None
        master = self.nginx.process.pid
        before = _children(master)
        self.nginx.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = _children(master)
            if now and not (now & before):
                return
            time.sleep(0.02)
        raise AssertionError(
            f"nginx did not reload within {timeout} s: "
            + (self.folder / "nginx" / "error.log").read_text()[-2000:]
        )

    # --- idp-admin and workers -------------------------------------------------

    @contextlib.contextmanager
    def environment(self) -> Iterator[None]:
        saved = {name: os.environ.get(name) for name in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def admin(self, *args) -> subprocess.CompletedProcess:
        """``idp-admin INI ARGS`` in this process (tests/cli.py ``admin``)."""
        with self.environment():
            return admin(self.ini, *args)

    def ok(self, *args) -> str:
        result = self.admin(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def run(self, *args, timeout: float = 120) -> subprocess.CompletedProcess:
        """``idp-admin INI ARGS`` as its own process."""
        return subprocess.run(
            [str(IDP_ADMIN), str(self.ini), *map(str, args)],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            text=True,
            check=False,
            env={**os.environ, **self.env},
            timeout=timeout,
        )

    def start_deliverer(self) -> subprocess.Popen:
        """``idp-admin INI mail deliver --loop`` as its own process."""
        number = len(self.deliverers)
        with (self.folder / f"deliverer-{number}.log").open("ab") as log:
            process = subprocess.Popen(
                [str(IDP_ADMIN), str(self.ini), "mail", "deliver", "--loop"],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
            )
        self.deliverers.append(process)
        return process

    def stop_deliverers(self) -> list[int]:
        """SIGTERM every deliverer; their exit statuses."""
        statuses = [_stop(process) for process in self.deliverers]
        self.deliverers = []
        return statuses

    # --- clients ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.ports.https}"

    def tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cert_file))
        return context

    def browser(
        self, node: int | None = None, address: str | None = None
    ) -> webtest.TestApp:
        """WebTest through nginx over HTTPS, or straight to node ``node``.

        Straight to a node, the client says what nginx would (it is a
        trusted proxy there, on 127.0.0.1): https, the public host, and
        ``address`` as the client's (or 127.0.0.1).
        """
        if node is None:
            proxy = HttpsProxy(self.ports.https, self.tls())
        else:
            proxy = NodeProxy(self.ports.nodes[node], address or HOST)
        return webtest.TestApp(
            proxy,
            extra_environ={
                "HTTP_HOST": f"{HOST}:{self.ports.https}",
                # A browser's form posts say where they come from.
                "HTTP_ORIGIN": self.url,
                "wsgi.url_scheme": "https",
            },
        )

    def session(self):
        """A ``requests.Session`` through nginx that trusts its certificate."""
        import requests

        session = requests.Session()
        session.verify = str(self.cert_file)
        return session

    def logs(self) -> str:
        """Every node's log, for an assertion's message."""
        return "\n".join(
            f"--- node {n} ---\n{node.log_tail(60)}"
            for n, node in enumerate(self.nodes)
        )


def _children(pid: int) -> set[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        found: set[int] = set()
        for task in tasks:
            found |= {int(c) for c in (task / "children").read_text().split()}
        return found
    except OSError:
        return set()


def _stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=10)


class HttpsProxy(WireProxy):
    """A WSGI app forwarding each request over HTTPS to ``port`` (nginx).

    ``webtest.TestApp(HttpsProxy(...))`` fills forms and keeps cookies as
    usual while every byte goes through nginx and a node. Each request is
    its own connection, so nginx balances them as it would browsers'.
    """

    def __init__(self, port: int, context: ssl.SSLContext | None) -> None:
        super().__init__(port)
        self.context = context

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPSConnection(
            HOST, self.port, timeout=60, context=self.context
        )


class NodeProxy(HttpsProxy):
    """The same, in plain HTTP to one node, with the headers nginx would add."""

    def __init__(self, port: int, address: str) -> None:
        super().__init__(port, None)
        self.extra_headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": address}

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(HOST, self.port, timeout=60)


# --- what the scale-out tests and the benchmark do through a cluster ------------


#: The module every SP registered by :func:`register_sp` belongs to, and the
#: role granting it that every user of :func:`add_users` holds (SAML-32: an
#: SSO needs both).
MODULE, ROLE = "SCALE", "scale-tester"


def add_users(cluster: Cluster, count: int, **values) -> list[dict]:
    """``count`` usable users (tests/factories.py), committed; their fields.

    Each holds :data:`ROLE`, which grants :data:`MODULE`.
    """
    from sqlalchemy.orm import Session

    from idp.models import Role
    from tests.factories import display, make_module, make_role, make_user

    made = []
    with Session(cluster.engine) as dbsession:
        role = dbsession.scalar(select(Role).where(Role.name == ROLE))
        if role is None:
            role = make_role(dbsession, ROLE, make_module(dbsession, MODULE))
        for _ in range(count):
            user = make_user(dbsession, **values)
            user.roles.append(role)
            made.append({"id": user.id, "number": display(user), "email": user.email})
        dbsession.commit()
    return made


def register_sp(cluster: Cluster, host: str) -> tuple[str, str]:
    """Register the SP ``https://HOST/sp`` with ``idp-admin sp import``.

    Returns its entity ID and ACS URL.
    """
    from tests.saml_metadata import make_sp_metadata

    entity_id, acs = f"https://{host}/sp", f"https://{host}/acs"
    metadata = cluster.folder / f"{host}.xml"
    metadata.write_bytes(make_sp_metadata(entity_id))
    add_users(cluster, 0)  # the module exists
    cluster.ok("sp", "import", metadata, "--module", MODULE)
    return entity_id, acs


def sso_path(cluster: Cluster, entity_id: str, acs: str) -> str:
    """``/saml/sso/redirect?...``: a fresh AuthnRequest from the SP."""
    from tests.saml_requests import authn_request, redirect_query

    xml = authn_request(
        issuer=entity_id, acs_url=acs, destination=f"{cluster.url}/saml/sso/redirect"
    )
    return f"/saml/sso/redirect?{redirect_query(xml, relay_state='scale')}"


def saml_response(page) -> bytes:
    """The SAMLResponse an auto-posting answer page carries, decoded."""
    import base64

    import lxml.html

    field = lxml.html.fromstring(page.body).xpath("//input[@name='SAMLResponse']")
    assert field, f"no SAMLResponse in the answer ({page.status}): {page.text[:300]}"
    return base64.b64decode(field[0].get("value"))


def signing_certificate(response_xml: bytes) -> str:
    """The certificate in the signature of a SAML response (or its assertion)."""
    from lxml import etree

    found = etree.fromstring(response_xml).xpath(
        "//ds:Signature/ds:KeyInfo/ds:X509Data/ds:X509Certificate/text()",
        namespaces={"ds": "http://www.w3.org/2000/09/xmldsig#"},
    )
    assert found, "the response carries no signing certificate"
    return "".join(found[0].split())


def metadata_certificates(page) -> set[str]:
    """The signing certificates idMe's metadata publishes."""
    from lxml import etree

    found = etree.fromstring(page.body).xpath(
        "//md:IDPSSODescriptor/md:KeyDescriptor[not(@use) or @use='signing']"
        "//ds:X509Certificate/text()",
        namespaces={
            "md": "urn:oasis:names:tc:SAML:2.0:metadata",
            "ds": "http://www.w3.org/2000/09/xmldsig#",
        },
    )
    return {"".join(text.split()) for text in found}


def queued_addresses(cluster: Cluster) -> set[str]:
    """Every address the outbox holds mail or a mail job for, sent or not.

    A job (``Outbox.defer``: a reset request, whose recipient is found
    outside the request) names no recipient; its sealed data is opened with
    the cluster's key and every string in it counts.
    """
    from email.utils import parseaddr

    from idp.models import OutboxMessage
    from idp.services.mail import OutboxCodec, open_job

    codec = OutboxCodec(cluster.env["IDP_HMAC_KEY"])
    found: set[str] = set()
    with cluster.engine.connect() as conn:
        for row in conn.execute(select(OutboxMessage.recipient, OutboxMessage.message)):
            if row.recipient:
                found.add(parseaddr(row.recipient)[1])
            else:
                data = open_job(codec, row)
                found |= {value for value in data.values() if isinstance(value, str)}
    return found
