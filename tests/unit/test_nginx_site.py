"""The shipped nginx site (``deploy/nginx/idme.conf``): valid, and in step with the app.

Each value nginx must agree with lives elsewhere (the body cap in
``production.ini``, the security headers in ``idp/tweens.py``, waitress's
idle timeout and trusted headers in ``[server:main]``); these tests read
both sides. ``tests/functional/test_nginx_site.py`` runs the site.
"""

from __future__ import annotations

import configparser
import re

from idp import csp
from idp.tweens import BASE_HEADERS, HSTS
from tests.app import ROOT
from tests.nginx_site import (
    CERT,
    CERT_KEY,
    Ports,
    check,
    prepare,
    render_site,
)
from tests.served import server_settings
from tests.smtp import make_certificate
from tests.unit.test_server_settings import NGINX_UPSTREAM_KEEPALIVE_SECONDS

SITE = (ROOT / "deploy" / "nginx" / "idme.conf").read_text()
PRODUCTION = ROOT / "production.ini"


def directives(name: str, text: str = SITE) -> list[str]:
    """The arguments of every ``name ...;`` directive, comments left out."""
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    return [m.strip() for m in re.findall(rf"(?m)^\s*{name}\s+([^;]*);", code)]


def block(opening: str, holding: str = "") -> str:
    """The first block that opens with ``opening {`` and holds ``holding``."""
    start = (
        SITE.rindex(opening + " {", 0, SITE.index(holding))
        if holding
        else (SITE.index(opening + " {"))
    )
    depth, end = 0, start
    for end in range(start, len(SITE)):
        depth += {"{": 1, "}": -1}.get(SITE[end], 0)
        if depth == 0 and SITE[end] == "}":
            break
    return SITE[start:end]


def ini_section(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(PRODUCTION)
    return parser[name]


def app_setting(name: str) -> str:
    return ini_section("app:main")[name]


def size(value: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", value.lower()).groups()
    return int(number) * units[unit]


def test_nginx_accepts_the_site_rendered_for_this_machine(tmp_path):
    """``nginx -t`` on the site with only ports, TLS files and names changed."""
    cert_file, key_file = make_certificate(tmp_path)
    conf = prepare(
        tmp_path / "nginx", Ports(18443, 18080, (18601, 18602)), cert_file, key_file
    )
    result = check(conf)
    assert result.returncode == 0, result.stderr
    # A broken site is refused: the check can fail.
    (tmp_path / "nginx" / "idme.conf").write_text(
        SITE.replace("keepalive 32;", "keepalive;")
    )
    assert check(conf).returncode != 0


def test_the_lines_a_harness_rewrites_keep_their_shape():
    """tests/nginx_site.py (and the scale-out harness) rewrite exactly these lines."""
    lines = SITE.splitlines()
    for line in (
        "    listen 443 ssl http2;",
        "    listen [::]:443 ssl http2;",
        "    listen 80;",
        "    listen [::]:80;",
        f"    {CERT}",
        f"    {CERT_KEY}",
        "    server 127.0.0.1:6543 max_fails=2 fail_timeout=10s;",
        "    server 127.0.0.1:6544 max_fails=2 fail_timeout=10s;",
    ):
        assert line in lines, line
    assert directives("server_name") == ["idme.moe.gov.my"] * 2
    rendered = render_site(Ports(1, 2, (3, 4)), "/c.pem", "/k.pem", "/logs")
    assert "6543" not in rendered and "/etc/idme" not in rendered
    assert "idme.moe.gov.my" not in rendered.split("server_name", 1)[1]


def test_ops_05_the_body_cap_is_the_apps():
    """OPS-05: nginx refuses exactly what the app would (idp.max_request_body)."""
    assert [size(v) for v in directives("client_max_body_size") if v != "0"] == [
        int(app_setting("idp.max_request_body"))
    ]
    # The only other value is the error pages' own, so discarding a refused
    # body cannot fail a second time.
    assert directives("client_max_body_size").count("0") == 4


def test_nginx_closes_idle_upstream_connections_before_waitress():
    upstream = block("upstream idme")
    assert directives("keepalive_timeout", upstream) == [
        f"{NGINX_UPSTREAM_KEEPALIVE_SECONDS}s"
    ]
    assert int(server_settings(PRODUCTION)["channel_timeout"]) > (
        NGINX_UPSTREAM_KEEPALIVE_SECONDS
    )
    assert directives("keepalive", upstream) == ["32"]


def test_ops_09_nginx_adds_the_apps_headers_only_where_missing():
    """OPS-09/WEB-05: the site's defaults are idp/tweens.py's, name for name.

    Each is added through a map that is empty when the node sent its own,
    so an app page keeps its page-specific CSP and no header is doubled.
    """
    values = dict(
        re.findall(
            r'map \$upstream_http_\S+ \$(\S+) \{\n +"" +"([^"]*)";\n +default +"";',
            SITE,
        )
    )
    added = {
        name: values[variable]
        for name, variable in re.findall(r"add_header (\S+) \$(idp_\S+) always;", SITE)
        if variable in values
    }
    expected = {**BASE_HEADERS, "Content-Security-Policy": csp.BASE_HEADER}
    expected["Strict-Transport-Security"] = HSTS
    assert added == expected
    # Every add_header is at server level, with "always" (error statuses
    # too), and no location has its own (which would drop these there).
    https = block("server", holding="listen 443 ssl")
    assert len(directives("add_header")) == len(directives("add_header", https))
    assert all(v.endswith(" always") for v in directives("add_header"))
    for location in re.findall(r"location [^{]*\{[^}]*\}", SITE):
        assert "add_header" not in location


def test_auth_27_forwarded_headers_are_set_never_passed_through():
    """AUTH-27/WEB-07: what waitress trusts from nginx, nginx sets itself.

    ``proxy_set_header`` replaces whatever the client sent; waitress trusts
    one proxy and exactly these headers.
    """
    headers = dict(v.split(None, 1) for v in directives("proxy_set_header"))
    assert headers["X-Forwarded-For"] == "$remote_addr"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    assert headers["X-Forwarded-Host"] == "$http_host"
    assert headers["X-Request-Start"] == '"t=${msec}"'
    server = ini_section("server:main")
    trusted = set(server["trusted_proxy_headers"].split())
    assert trusted == {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}
    assert trusted <= {name.lower() for name in headers}
    assert server["trusted_proxy_count"] == "1"


def test_only_what_cannot_apply_twice_is_retried_on_the_other_node():
    """A POST sent to a node is never resent; no status the app wrote is retried."""
    (retry,) = directives("proxy_next_upstream")
    assert set(retry.split()) == {"error", "timeout"}
    assert directives("proxy_next_upstream_tries") == ["2"]
    assert directives("proxy_next_upstream_timeout") == ["5s"]


def test_tls_is_1_2_and_1_3_with_forward_secret_aead_suites():
    assert directives("ssl_protocols") == ["TLSv1.2 TLSv1.3"]
    (ciphers,) = directives("ssl_ciphers")
    for suite in ciphers.split(":"):
        assert suite.startswith("ECDHE-"), suite
        assert "GCM" in suite or "CHACHA20-POLY1305" in suite, suite
    assert directives("ssl_session_tickets") == ["off"]
    assert "max-age=31536000" in HSTS


def test_metrics_is_not_served_through_the_proxy():
    """Each node is scraped on its own port; through nginx /metrics is a 404."""
    locations = re.findall(r"location \^~ (\S+) \{\s*return 404;", SITE)
    assert locations == ["/metrics"]
