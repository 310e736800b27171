"""An upgrade while a node of the previous release still serves, rehearsed for real.

Issue 17. Nodes are upgraded one at a time (docs/deploy.md, "Upgrading
while the other node serves"): the previous release keeps serving on the
schema the new release's ``idp-admin db upgrade`` changes under it. This
test takes the previous release's code from git (the commit before the
newest migration was added, in a ``git worktree``), sets up a PostgreSQL
database with *its* ``idp-admin`` (schema, key, module, role, user, SP),
runs it as a waitress node in its own process (same virtualenv,
``PYTHONPATH`` on the old tree), signs the user in through its pages, and
keeps single sign-on flowing against it while the current code's
``idp-admin db upgrade`` runs: no request may fail. A node of the current
code then serves the same browser session.

The static half of the rule, that migrations only expand, is
tests/unit/test_migration_safety.py.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import webtest
from lxml import etree

from tests.cli import NUMBER, add_user_arguments, ok, printed_password, set_settings
from tests.factories import NEW_PASSWORD
from tests.keys import signed_by
from tests.nodes import NodeProcess, free_port
from tests.postgresql import scratch_databases
from tests.saml_metadata import make_sp_metadata
from tests.saml_requests import authn_request, redirect_query
from tests.served import WireProxy
from tests.signin import first_sign_in, sign_in

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = "idp/migrations/versions"
HOST = "idp.test"
SAML = "{urn:oasis:names:tc:SAML:2.0:assertion}"
# Each node's idp-admin, from the tree on PYTHONPATH.
CLI = "import sys; from idp.cli import main; sys.exit(main(sys.argv[1:]))"
NODE = """
import sys, waitress
import idp
from pyramid.paster import get_app
print("idp from", idp.__file__, flush=True)
app = get_app(sys.argv[1], "main")
# Port 0: the kernel's free port, bound here and printed, so no other
# process can take it between choosing and listening.
server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4,
                                url_scheme="https", ident="idme")
print("listening on port", server.effective_port, flush=True)
server.run()
"""
LISTENING = re.compile(r"^listening on port (\d+)$", re.MULTILINE)


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()


def previous_release() -> tuple[str, str]:
    """(commit, its newest migration): the code just before the newest migration came.

    A migration not committed yet is new against HEAD, which is then the
    previous release: the rehearsal runs while the migration is written.
    """
    newest = sorted((ROOT / VERSIONS).glob("[0-9]*.py"))[-1]
    try:
        added = git(
            "log", "--diff-filter=A", "--format=%H", "--", f"{VERSIONS}/{newest.name}"
        ).splitlines()
    except (OSError, subprocess.CalledProcessError) as exc:
        reason = " ".join((getattr(exc, "stderr", "") or str(exc)).split())
        pytest.skip(f"no git history to take the previous release from: {reason}")
    try:
        commit = git("rev-parse", "--verify", f"{added[-1]}^" if added else "HEAD")
    except subprocess.CalledProcessError:
        pytest.fail(
            f"the commit before {newest.name} was added is not in this clone "
            "(shallow?): fetch more history (git fetch --unshallow)"
        )
    old = git("ls-tree", "--name-only", commit, f"{VERSIONS}/").splitlines()
    old_newest = sorted(Path(p).stem for p in old if Path(p).name[:1].isdigit())[-1]
    return commit, old_newest


@contextlib.contextmanager
def checkout(commit: str, folder: Path) -> Iterator[Path]:
    git("worktree", "add", "--detach", str(folder), commit)
    try:
        yield folder
    finally:
        git("worktree", "remove", "--force", str(folder))


def node_ini(tree: Path, folder: Path, url: str) -> Path:
    """``tree``'s development.ini for a node: its templates, shared scratch state."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (tree / "development.ini").read_text()
    text = text.replace("%(here)s/templates", f"{tree}/templates")
    path = folder / f"{tree.name}.ini"
    path.write_text(text)
    shared = folder.parent
    set_settings(
        path,
        {
            "sqlalchemy.url": url,
            "idp.base_url": f"https://{HOST}",
            "idp.allowed_hosts": "",
            "idp.certs_dir": str(shared / "certs"),
            "idp.metadata_dir": str(shared / "metadata"),
            "mail.directory": str(shared / "mail"),
            "mail.deliver_in_process": "false",
            "idp.key_size": "2048",
            "idp.bcrypt_rounds": "4",
            "captcha.enabled": "false",
        },
    )
    return path


def environment(tree: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "IDP_DATABASE_URL"}
    env["PYTHONPATH"] = str(tree)
    return env


def cli(tree: Path, ini: Path, *args: str) -> str:
    """``idp-admin`` of the release in ``tree``, in its own process."""
    result = subprocess.run(
        [sys.executable, "-c", CLI, str(ini), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=tree,
        env=environment(tree),
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (tree.name, args, result.stderr)
    return result.stdout


def browser_on(port: int) -> webtest.TestApp:
    """A browser on the node at ``port``, every byte through its waitress."""
    return webtest.TestApp(
        WireProxy(port),
        extra_environ={"HTTP_HOST": HOST, "HTTP_ORIGIN": f"https://{HOST}"},
    )


@contextlib.contextmanager
def node(tree: Path, ini: Path, log: Path) -> Iterator[int]:
    """The release in ``tree`` served by waitress in its own process; its port.

    For the previous release, which may predate ``idp-admin serve``.
    """
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", NODE, str(ini)],
            cwd=tree,
            env=environment(tree),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        # The port the node printed once it was bound: a port chosen here
        # and checked by connecting could be another test's server's.
        while (listening := LISTENING.search(log.read_text())) is None:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        yield int(listening.group(1))
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sso(client: webtest.TestApp) -> bytes:
    """A fresh AuthnRequest from the SP; the Response the signed-in browser carries."""
    query = redirect_query(
        authn_request(destination=f"https://{HOST}/saml/sso/redirect")
    )
    page = client.get("/saml/sso/redirect?" + query, status=200)
    return base64.b64decode(page.forms["saml-post-form"]["SAMLResponse"].value)


def name_id(xml: bytes) -> str:
    return etree.fromstring(xml).find(f".//{SAML}NameID").text


class Traffic(threading.Thread):
    """Sign-ins and SSOs against a node until stopped; every outcome kept.

    Turn about: an SSO for the signed-in browser (reads and updates its
    session), then a new browser signing in (a new session row, audit
    rows, rate-limit counters) and going on to the SP.
    """

    def __init__(self, client: webtest.TestApp, certificate: Path, new_browser) -> None:
        super().__init__(name="sso-traffic", daemon=True)
        self.client = client
        self.certificate = certificate
        self.new_browser = new_browser
        self.stop = threading.Event()
        self.done = 0
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if self.done % 2:
                    client = self.new_browser()
                    sign_in(client, NUMBER, NEW_PASSWORD)
                else:
                    client = self.client
                xml = sso(client)
                if not signed_by(xml, self.certificate):
                    self.failures.append("a Response not signed by the IdP's key")
            except Exception as exc:
                self.failures.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            self.done += 1

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        target = self.done + count
        while self.done < target and not self.failures:
            assert self.is_alive(), "the traffic thread stopped"
            assert time.monotonic() < deadline, f"{self.done} SSOs, wanted {target}"
            time.sleep(0.01)


def test_the_previous_release_serves_sso_throughout_db_upgrade(tmp_path):
    commit, old_head = previous_release()
    new_head = sorted((ROOT / VERSIONS).glob("[0-9]*.py"))[-1].stem
    assert old_head != new_head
    with (
        scratch_databases("rolling_upgrade") as (url,),
        checkout(commit, tmp_path / "previous") as old_tree,
    ):
        state = tmp_path / "state"
        old_ini = node_ini(old_tree, state / "nodes", url)
        new_ini = node_ini(ROOT, state / "nodes", url)

        # The install as it stood on the previous release, made by its idp-admin.
        assert old_head in cli(old_tree, old_ini, "db", "upgrade")
        cli(old_tree, old_ini, "keys", "generate")
        names = ("--name-ms", "Modul Satu", "--name-en", "Module One")
        cli(old_tree, old_ini, "module", "create", "m1", *names)
        cli(
            old_tree,
            old_ini,
            "role",
            "create",
            "guru",
            "--name-ms",
            "Guru",
            "--name-en",
            "Teacher",
        )
        cli(old_tree, old_ini, "role", "grant-module", "guru", "m1")
        temporary = printed_password(
            cli(
                old_tree,
                old_ini,
                *add_user_arguments(),
                "--role",
                "guru",
                "--locale",
                "en",
                "--print-password",
            )
        )
        sp_file = state / "sp.xml"
        sp_file.write_bytes(make_sp_metadata())
        cli(old_tree, old_ini, "sp", "import", sp_file, "--module", "m1")
        certificate = state / "certs" / "signing.crt"

        with node(old_tree, old_ini, state / "old-node.log") as old_port:
            # The previous release's code, not the virtualenv's idMe.
            assert f"idp from {old_tree}/idp/" in (state / "old-node.log").read_text()
            old_node = browser_on(old_port)
            first_sign_in(old_node, NUMBER, temporary, NEW_PASSWORD)
            before = name_id(sso(old_node))

            traffic = Traffic(old_node, certificate, lambda: browser_on(old_port))
            traffic.start()
            try:
                traffic.wait_for(3)
                # The current code's upgrade, under the old node's feet.
                upgraded = ok(new_ini, "db", "upgrade")
                traffic.wait_for(5)  # and the old node goes on after it
            finally:
                traffic.stop.set()
                traffic.join(timeout=30)
            assert traffic.failures == [], traffic.failures[:5]
            assert re.search(rf"at revision {re.escape(new_head)}$", upgraded.strip())
            assert traffic.done >= 8
            cookies = {cookie.name: cookie.value for cookie in old_node.cookiejar}

        # The current code's node (idp-admin serve, as systemd runs it)
        # serves the same session: no new sign-in.
        new = NodeProcess(
            new_ini, free_port(), log=state / "new-node.log", env=environment(ROOT)
        ).start()
        try:
            new_node = browser_on(new.port)
            for name, value in cookies.items():
                new_node.set_cookie(name, value)
            xml = sso(new_node)
            assert signed_by(xml, certificate)
            assert name_id(xml) == before
        finally:
            new.stop()
        ok(new_ini, "db", "check")
