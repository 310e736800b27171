"""idp-admin source add --url/--mdq, source refresh and the refresher loops.

The partner is a local HTTPS server on 127.0.0.1 with a throwaway CA; the
scratch ini allowlists 127.0.0.1 and trusts that CA, as an operator would
for a partner inside the network. Commands run in this process
(tests/cli.py ``admin``); the ``--loop`` ones run as real processes, since
stopping on SIGTERM is what they are tested for.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models import MetadataSource
from tests.aggregates import federation_keys, make_aggregate
from tests.cli import IDP_ADMIN, admin, assert_refused, ok, rows
from tests.partner_metadata import MEDIA_TYPE
from tests.partner_server import Answer, closed_port


@pytest.fixture
def partner(partner_server):
    partner_server.reset()
    document = make_aggregate(3, signer=federation_keys(), cache_duration="PT6H")

    def answer(seen):
        if seen.headers.get("If-None-Match") == '"v1"':
            return Answer(304)
        return Answer(
            body=document, headers={"Content-Type": MEDIA_TYPE, "ETag": '"v1"'}
        )

    partner_server.routes["/federation.xml"] = answer
    return partner_server


def with_settings(ini: Path, **values: str) -> Path:
    """``ini`` with ``values`` set in its [app:main] section."""
    lines = "".join(f"{name} = {value}\n" for name, value in values.items())
    ini.write_text(ini.read_text().replace("[app:main]\n", "[app:main]\n" + lines, 1))
    return ini


@pytest.fixture
def trusting(db, ca) -> Path:
    """The scratch ini, allowlisting 127.0.0.1 and trusting the partner's CA."""
    return with_settings(
        db,
        **{
            "idp.metadata_fetch_allow": "127.0.0.1/32",
            "idp.metadata_fetch_ca_bundle": str(ca.ca_file),
        },
    )


@pytest.fixture
def anchor(tmp_path) -> Path:
    path = tmp_path / "federation.crt"
    path.write_text(Path(federation_keys()[1]).read_text())
    return path


def source(engine, name: str = "federation") -> MetadataSource:
    with Session(engine, expire_on_commit=False) as session:
        return session.scalars(
            select(MetadataSource).where(MetadataSource.name == name)
        ).one()


def test_a_url_source_is_added_fetched_shown_and_refreshed(
    trusting, engine, partner, anchor
):
    url = partner.url("/federation.xml")
    out = ok(trusting, "source", "add", "federation", "--url", url, "--anchor", anchor)
    assert f"added source federation (url {url})" in out
    assert "federation: 3 added" in out
    assert "next refresh: " in out
    assert len(rows(engine)) == 3
    added = source(engine)
    assert (added.kind, added.location, added.etag) == ("url", url, '"v1"')
    now = dt.datetime.now(dt.UTC)
    assert abs(added.next_refresh_at - (now + dt.timedelta(hours=6))) < dt.timedelta(
        minutes=1
    )

    assert ok(trusting, "source", "refresh", "federation") == (
        "federation: not modified (HTTP 304)\n"
    )
    shown = ok(trusting, "source", "show", "federation")
    assert "kind:              url" in shown
    assert "next refresh:      " in shown
    assert ok(trusting, "source", "list").startswith("federation\turl\t3 SPs")


def test_partner_down_fails_the_refresh_in_one_line_and_keeps_the_copy(
    trusting, engine, partner, anchor
):
    ok(trusting, "source", "add", "federation", "--url", partner.url("/federation.xml"),
       "--anchor", anchor)  # fmt: skip
    before = set(rows(engine))
    with Session(engine) as session, session.begin():
        session.get_one(
            MetadataSource, source(engine).id
        ).location = f"https://127.0.0.1:{closed_port()}/federation.xml"
    result = admin(trusting, "source", "refresh", "federation")
    assert result.returncode == 1
    assert "Connection refused" in result.stderr
    assert "the last good copy stays in force" in result.stderr
    assert "Traceback" not in result.stderr
    assert set(rows(engine)) == before
    shown = ok(trusting, "source", "show", "federation")
    assert "Connection refused" in shown
    assert "(1 failures)" in shown
    assert ok(trusting, "source", "list").rstrip().endswith("failing")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://127.0.0.1:{port}/federation.xml", "127.0.0.1 is loopback"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
        ("file:///etc/passwd", "the scheme 'file', not https"),
        ("http://127.0.0.1:{port}/federation.xml", "not https"),
    ],
)
def test_ops_04_add_refuses_an_internal_url_in_one_line(
    db, engine, partner, anchor, url, message
):
    """Without the allowlist, as production ships: nothing is fetched."""
    url = url.format(port=partner.port)
    result = admin(db, "source", "add", "federation", "--url", url, "--anchor", anchor)
    assert_refused(result, message)
    assert partner.connections == 0
    with Session(engine) as session:
        assert session.scalars(select(MetadataSource)).all() == []


def test_a_url_source_needs_an_anchor(trusting, partner):
    result = admin(
        trusting, "source", "add", "federation", "--url", partner.url("/federation.xml")
    )
    assert_refused(result, "a source needs --anchor")
    assert partner.connections == 0


def test_an_mdq_source_is_added_with_its_form(trusting, engine, anchor):
    out = ok(trusting, "source", "add", "mdq", "--mdq", "https://mdq.example.org/",
             "--anchor", anchor)  # fmt: skip
    assert "added source mdq (mdq https://mdq.example.org/entities/{sha1})" in out
    ok(trusting, "source", "add", "mdq-id", "--mdq", "https://mdq.example.org",
       "--mdq-form", "id", "--anchor", anchor)  # fmt: skip
    assert source(engine, "mdq-id").location == "https://mdq.example.org/entities/{id}"


@pytest.mark.parametrize(
    ("base", "message"),
    [
        ("http://mdq.example.org", "not https"),
        ("https://mdq.example.org/entities/{sha1}", "the part before /entities/"),
        ("https://user@mdq.example.org", "userinfo"),
    ],
)
def test_a_bad_mdq_base_is_refused(trusting, anchor, base, message):
    result = admin(trusting, "source", "add", "m", "--mdq", base, "--anchor", anchor)
    assert_refused(result, message)


def _start(ini: Path, *command: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(IDP_ADMIN), str(ini), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(process: subprocess.Popen) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    return out, err


def _make_due(engine) -> None:
    with Session(engine) as session, session.begin():
        session.get_one(MetadataSource, source(engine).id).next_refresh_at = (
            dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        )


def _wait_for_request(partner, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(partner.requests) < count:
        assert time.monotonic() < deadline, "the loop did not refresh"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [("source", "refresh", "--loop"), ("mail", "deliver", "--loop")],
    ids=["source-refresh-loop", "mail-deliver-loop"],
)
def test_the_loops_refresh_a_due_source_and_stop_on_sigterm(
    trusting, engine, partner, anchor, command
):
    ok(trusting, "source", "add", "federation", "--url", partner.url("/federation.xml"),
       "--anchor", anchor)  # fmt: skip
    _make_due(engine)
    process = _start(trusting, *command)
    try:
        _wait_for_request(partner, 2)
    finally:
        out, _err = _stop(process)
    assert "federation: not modified (HTTP 304)" in out
    assert source(engine).next_refresh_at > dt.datetime.now(dt.UTC)
    assert source(engine).lease_owner is None
