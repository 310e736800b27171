"""The shipped nginx site (``deploy/nginx/idme.conf``), rendered for 127.0.0.1 and run.

``render_site`` rewrites only what a test machine changes: the ``listen``
ports, the two ``ssl_certificate*`` paths, the nodes' ``server 127.0.0.1:65xx``
lines, ``server_name`` and the access log's directory. Everything else is
the file an operator installs. ``Nginx`` wraps the rendered site in a small
main configuration (pid, temporary and log files in a scratch folder, as
Debian's ``nginx.conf`` includes the site inside ``http {}``) and runs the
real nginx binary on it, in the foreground, as this process's child.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.app import ROOT

SITE = ROOT / "deploy" / "nginx" / "idme.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HOST = "127.0.0.1"
# What the shipped file holds, each on a line of its own.
NODE_LINE = re.compile(r"^(\s*server )127\.0\.0\.1:65\d\d\b", re.MULTILINE)
LISTEN_HTTPS = re.compile(r"^(\s*)listen (?:\[::\]:)?443 ssl( http2)?;\n", re.MULTILINE)
LISTEN_HTTP = re.compile(r"^(\s*)listen (?:\[::\]:)?80;\n", re.MULTILINE)
SERVER_NAME = re.compile(r"^(\s*)server_name idme\.moe\.gov\.my;", re.MULTILINE)
CERT = "ssl_certificate /etc/idme/tls/fullchain.pem;"
CERT_KEY = "ssl_certificate_key /etc/idme/tls/privkey.pem;"
LOG_DIR = "/var/log/nginx/"


@dataclass(frozen=True)
class Ports:
    https: int
    http: int
    nodes: tuple[int, ...]


def render_site(
    ports: Ports,
    cert_file: Path,
    key_file: Path,
    log_dir: Path,
    text: str | None = None,
) -> str:
    """The site for 127.0.0.1: IPv4 only, the given ports and TLS files."""
    text = SITE.read_text() if text is None else text

    def once(pattern: re.Pattern[str], replacement: str, source: str) -> str:
        # The IPv4 line becomes the test's; the IPv6 one goes.
        seen = []

        def swap(match: re.Match[str]) -> str:
            seen.append(match)
            return "" if len(seen) > 1 else match.expand(replacement)

        result = pattern.sub(swap, source)
        if not seen:
            raise ValueError(f"the site has no line matching {pattern.pattern!r}")
        return result

    text = once(LISTEN_HTTPS, rf"\1listen {HOST}:{ports.https} ssl\2;\n", text)
    text = once(LISTEN_HTTP, rf"\1listen {HOST}:{ports.http};\n", text)
    nodes = iter(ports.nodes)
    text = NODE_LINE.sub(lambda m: f"{m.group(1)}{HOST}:{next(nodes)}", text)
    text = SERVER_NAME.sub(rf"\1server_name {HOST};", text)
    for old, new in (
        (CERT, f"ssl_certificate {cert_file};"),
        (CERT_KEY, f"ssl_certificate_key {key_file};"),
        (LOG_DIR, f"{log_dir}/"),
    ):
        if old not in text:
            raise ValueError(f"the site has no {old!r}")
        text = text.replace(old, new)
    return text


def main_conf(folder: Path, site: Path) -> str:
    """What Debian's /etc/nginx/nginx.conf gives the site, in ``folder``."""
    temp = folder / "temp"
    # Run as root (a container), the workers would become "nobody" and
    # could not write the scratch folder.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\n"
        f"pid {folder}/nginx.pid;\n"
        f"error_log {folder}/error.log;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "    include /etc/nginx/mime.types;\n"
        "    default_type application/octet-stream;\n"
        f"    client_body_temp_path {temp}/body;\n"
        f"    proxy_temp_path {temp}/proxy;\n"
        f"    fastcgi_temp_path {temp}/fastcgi;\n"
        f"    uwsgi_temp_path {temp}/uwsgi;\n"
        f"    scgi_temp_path {temp}/scgi;\n"
        f"    access_log {folder}/access.log;\n"
        f"    include {site};\n"
        "}\n"
    )


def prepare(folder: Path, ports: Ports, cert_file: Path, key_file: Path) -> Path:
    """Write the rendered site and its main configuration; return the latter."""
    (folder / "temp").mkdir(parents=True, exist_ok=True)
    (folder / "log").mkdir(exist_ok=True)
    site = folder / "idme.conf"
    site.write_text(render_site(ports, cert_file, key_file, folder / "log"))
    conf = folder / "nginx.conf"
    conf.write_text(main_conf(folder, site))
    return conf


def check(conf: Path) -> subprocess.CompletedProcess:
    """``nginx -t`` on ``conf``."""
    return subprocess.run(
        [NGINX, "-t", "-q", "-p", str(conf.parent), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )


class Nginx:
    """nginx in the foreground on a prepared configuration, until ``stop``."""

    def __init__(self, conf: Path, ports: Ports) -> None:
        self.conf = conf
        self.ports = ports
        self.process: subprocess.Popen | None = None

    def start(self) -> Nginx:
        self.process = subprocess.Popen(
            [
                NGINX,
                "-p",
                str(self.conf.parent),
                "-c",
                str(self.conf),
                "-g",
                "daemon off;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"nginx exited: {self.process.stderr.read().decode()}"
                )
            try:
                with socket.create_connection((HOST, self.ports.https), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("nginx did not start listening within 10 s")

    def access_log(self, lines: int = 1) -> str:
        """The site's access log once it holds ``lines`` lines (nginx writes a
        request's line after its answer has gone)."""
        path = self.conf.parent / "log" / "idme-access.log"
        deadline = time.monotonic() + 5
        text = ""
        while time.monotonic() < deadline:
            text = path.read_text() if path.exists() else ""
            if text.count("\n") >= lines:
                break
            time.sleep(0.01)
        return text

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # SIGQUIT: finish what is under way (nginx's graceful stop).
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stderr.close()

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass(frozen=True)
class Seen:
    """A request as a node received it."""

    node: int
    method: str
    path: str
    headers: dict[str, str]
    body_length: int


# The headers a node of the app sets itself (idp/tweens.py), each with a
# value nginx's defaults do not have, so a doubled or replaced one shows.
OWN_HEADERS = {
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=()",
    "Content-Security-Policy": "default-src 'self'; form-action https://sp.example",
    "Strict-Transport-Security": "max-age=60",
}


class StubNode:
    """A web node that answers as told by the path, recording what it got.

    ``/drop...``: reads the whole request, then closes the connection
    without answering (a node killed mid-request). ``/own-headers``: answers
    with the app's own security headers. Anything else: 200 with no
    security header at all (as waitress's own answers have none).
    """

    def __init__(self, number: int, seen: list[Seen]) -> None:
        import http.server
        import threading

        node = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with node.lock:
                    seen.append(
                        Seen(
                            number,
                            self.command,
                            self.path,
                            dict(self.headers),
                            len(body),
                        )
                    )
                if self.path.startswith("/drop"):
                    self.close_connection = True
                    return
                payload = f"node {number}".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                if self.path == "/own-headers":
                    for name, value in OWN_HEADERS.items():
                        self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_HEAD = _any

        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.02,), daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
