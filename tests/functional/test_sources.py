"""idp-admin source ... and sp check: metadata sources as an operator runs them.

In-process commands (tests/cli.py ``admin``) on a scratch ini and SQLite
database; the documents come from tests/aggregates.py (signed as a
federation signs) and tests/metadata_sources.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import ssl
import stat
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models import AuditEvent, MetadataSource
from tests.aggregates import federation_keys, make_aggregate, sp_entity
from tests.cli import admin, assert_refused, fails, ok, rows
from tests.metadata_sources import aggregate, entity, entity_id, with_endpoint

SP0 = "https://sp0.example.edu.my/shibboleth"
SP1 = "https://sp1.example.edu.my/shibboleth"


def anchor_file(tmp_path) -> Path:
    path = tmp_path / "federation.crt"
    path.write_text(Path(federation_keys()[1]).read_text())
    return path


def fingerprint() -> str:
    der = ssl.PEM_cert_to_DER_cert(Path(federation_keys()[1]).read_text())
    return hashlib.sha256(der).hexdigest()


def sources(engine) -> dict[str, MetadataSource]:
    with Session(engine, expire_on_commit=False) as session:
        return {s.name: s for s in session.scalars(select(MetadataSource))}


def audit_events(engine, name: str) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.event == name)))


def test_a_signed_file_source_add_show_list_refresh_remove(
    db, engine, tmp_path, monkeypatch
):
    document = tmp_path / "federation.xml"
    document.write_bytes(make_aggregate(3, signer=federation_keys()))

    out = ok(
        db, "source", "add", "federation", "--file", document,
        "--anchor", anchor_file(tmp_path), "--release", "uid,displayName",
    )  # fmt: skip
    assert "added source federation (file" in out
    assert "federation: 3 added, 0 updated" in out
    registered = rows(engine)
    assert set(registered) == {SP0, SP1, "https://sp2.example.edu.my/shibboleth"}
    assert registered[SP0].attributes_released == ["uid", "displayName"]

    out = ok(db, "source", "show", "federation")
    assert "trust anchor:      certificate CN=federation.example.org" in out
    assert "SPs:               3" in out
    assert "quarantined:       0" in out
    assert ok(db, "source", "list").startswith("federation\tfile\t3 SPs\t0 quarantined")
    assert "\tsource federation" in ok(db, "sp", "list")
    assert "registered by:        source federation" in ok(db, "sp", "show", SP0)

    # Unchanged: nothing is read again.
    assert "document unchanged" in ok(db, "source", "refresh", "federation")

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # end of input: refused
    result = admin(db, "source", "remove", "federation")
    assert result.returncode == 1
    assert "the 3 SPs it brought" in result.stdout
    assert len(rows(engine)) == 3
    assert ok(db, "source", "remove", "federation", "--yes") == (
        "removed source federation and 3 SPs\n"
    )
    assert rows(engine) == {}
    assert sources(engine) == {}
    [event] = audit_events(engine, "source.removed")
    assert len(event.detail["removed"]) == 3


def test_a_fingerprint_anchor_and_a_refused_signature(db, engine, tmp_path):
    document = tmp_path / "federation.xml"
    document.write_bytes(make_aggregate(1, signer=federation_keys("impostor")))
    line = fails(
        db, "source", "add", "fed", "--file", document, "--anchor", fingerprint()
    )
    assert line.startswith("idp-admin: ")
    assert sources(engine) == {}  # nothing kept
    document.write_bytes(make_aggregate(1, signer=federation_keys()))
    ok(db, "source", "add", "fed", "--file", document, "--anchor", fingerprint())
    assert set(rows(engine)) == {SP0}

    # A refresh that fails keeps the last good copy and says so.
    document.write_bytes(make_aggregate(2, signer=federation_keys("impostor")))
    result = admin(db, "source", "refresh", "fed")
    assert result.returncode == 1
    assert "the last good copy stays in force" in result.stderr
    assert set(rows(engine)) == {SP0}
    source = sources(engine)["fed"]
    assert source.failures == 1
    assert source.last_error
    assert "last error:        " + source.last_error in ok(db, "source", "show", "fed")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ((), "a source needs --anchor"),
        (("--anchor", "abcd"), "neither a readable PEM file nor a SHA-256"),
        (("--unsigned-ok", "--module", "NOPE"), "no module has the code 'NOPE'"),
        (("--unsigned-ok", "--release", "uid,password"), "unknown attribute password"),
    ],
    ids=["no_anchor", "bad_anchor", "module", "release"],
)
def test_add_refuses_in_one_line(db, engine, tmp_path, extra, message):
    document = tmp_path / "f.xml"
    document.write_bytes(aggregate(entity("a")))
    assert_refused(
        admin(db, "source", "add", "partner", "--file", document, *extra), message
    )
    assert sources(engine) == {}


def test_names_and_missing_files_are_refused(db, tmp_path):
    assert_refused(
        admin(db, "source", "add", "../x", "--file", "x", "--unsigned-ok"),
        "invalid source name",
    )
    assert_refused(
        admin(
            db, "source", "add", "p", "--file", tmp_path / "none.xml", "--unsigned-ok"
        ),
        "cannot read",
    )
    assert_refused(admin(db, "source", "show", "nobody"), "no metadata source")
    document = tmp_path / "f.xml"
    document.write_bytes(aggregate(entity("a")))
    ok(db, "source", "add", "p", "--file", document, "--unsigned-ok")
    assert_refused(
        admin(db, "source", "add", "p", "--file", document, "--unsigned-ok"),
        "a metadata source is already named 'p'",
    )


def test_unsigned_ok_is_refused_outside_development(db, engine, tmp_path, monkeypatch):
    from tests.app import DEVELOPMENT_INI

    production = tmp_path / "production.ini"
    production.write_text(
        (DEVELOPMENT_INI.parent / "production.ini")
        .read_text()
        .replace(
            "postgresql+psycopg://idp@localhost/idp",
            f"sqlite:///{tmp_path / 'idp.sqlite'}",
        )
        .replace("%(here)s/metadata", str(tmp_path / "metadata"))
    )
    monkeypatch.setenv("IDP_SESSION_SECRET", "s" * 40)
    monkeypatch.setenv("IDP_HMAC_KEY", "h" * 40)
    document = tmp_path / "f.xml"
    document.write_bytes(aggregate(entity("a")))
    assert_refused(
        admin(production, "source", "add", "p", "--file", document, "--unsigned-ok"),
        "--unsigned-ok is for development only",
    )
    # The control: the same ini takes a signed source.
    document.write_bytes(make_aggregate(1, signer=federation_keys()))
    ok(production, "source", "add", "p", "--file", document, "--anchor", fingerprint())
    assert set(rows(engine)) == {SP0}


def test_web_14_an_upload_is_stored_under_a_generated_name(db, engine, tmp_path):
    """WEB-14: the given name never reaches the file system."""
    (tmp_path / "certs").mkdir(exist_ok=True)
    upload = tmp_path / "incoming"
    upload.mkdir()
    hostile = upload / ".." / ".." / "certs" / "x"
    evil_name = tmp_path / "incoming" / "..%2f..%2fcerts%2fx.xml"
    for path in (evil_name,):
        path.write_bytes(aggregate(entity("a")))
    before = set(tmp_path.rglob("*"))

    out = ok(db, "source", "add", "up", "--upload", evil_name, "--unsigned-ok")

    source = sources(engine)["up"]
    stored = Path(source.location)
    assert stored.parent == tmp_path / "metadata"
    assert stored.name.startswith("source-up-") and stored.suffix == ".xml"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o644
    assert stored.read_bytes() == evil_name.read_bytes()
    created = set(tmp_path.rglob("*")) - before
    assert created <= {stored, stored.parent, tmp_path / "idp.sqlite-wal",
                       tmp_path / "idp.sqlite-shm"}  # fmt: skip
    assert not hostile.exists()
    assert f"upload {stored}" in out
    # The upload is read from the stored copy, not the operator's path.
    evil_name.unlink()
    assert "document unchanged" in ok(db, "source", "refresh", "up")
    ok(db, "source", "remove", "up", "--yes")
    assert not stored.exists()


def test_a_refused_upload_leaves_no_file(db, engine, tmp_path):
    document = tmp_path / "expired.xml"
    document.write_bytes(
        aggregate(entity("a"), valid_until=dt.datetime.now(dt.UTC) - dt.timedelta(1))
    )
    assert_refused(
        admin(db, "source", "add", "up", "--upload", document, "--unsigned-ok"),
        "the document expired",
    )
    assert not list((tmp_path / "metadata").glob("source-*"))


def test_quarantine_pending_diff_and_approve(db, engine, tmp_path):
    document = tmp_path / "f.xml"
    bad = with_endpoint(
        entity("bad"), "AssertionConsumerService", "ftp://bad.example.org/"
    )
    document.write_bytes(aggregate(entity("a"), bad))
    out = ok(db, "source", "add", "p", "--file", document, "--unsigned-ok")
    assert f"quarantined {entity_id('bad')}: AssertionConsumerService" in out
    out = ok(db, "source", "show", "p")
    assert "quarantined:       1" in out
    assert f"  {entity_id('bad')}: AssertionConsumerService" in out

    moved = with_endpoint(
        entity("a"), "AssertionConsumerService", "https://a.example.org/new"
    )
    document.write_bytes(aggregate(moved, bad))
    out = ok(db, "source", "refresh", "p")
    assert f"held {entity_id('a')}" in out
    out = ok(db, "source", "show", "p", "--pending")
    assert "    AssertionConsumerService added: https://a.example.org/new" in out
    assert ok(db, "source", "approve", "p", "--all") == f"approved {entity_id('a')}\n"
    assert "held changes:      0" in ok(db, "source", "show", "p")
    assert_refused(admin(db, "source", "approve", "p", "--all"), "no change is held")


def test_saml_29_confirm_host_through_the_cli(db, engine, tmp_path):
    """SAML-29: sp import and source approve both need --confirm-host."""
    victim = tmp_path / "victim.xml"
    victim.write_bytes(entity("victim"))
    ok(db, "sp", "import", victim)
    squatter = tmp_path / "squatter.xml"
    squatter.write_bytes(
        with_endpoint(
            entity("squatter"),
            "AssertionConsumerService",
            "https://victim.example.org/x",
        )
    )
    assert_refused(admin(db, "sp", "import", squatter), "victim.example.org (used by")
    other = tmp_path / "other.xml"
    other.write_bytes(
        with_endpoint(
            entity("other"), "SingleLogoutService", "https://victim.example.org/slo"
        )
    )
    ok(db, "sp", "import", other, "--confirm-host", "Victim.example.org")
    [event] = [
        e
        for e in audit_events(engine, "sp.imported")
        if e.detail["entity_id"] == entity_id("other")
    ]
    assert event.detail["confirmed_hosts"] == ["victim.example.org"]
    document = tmp_path / "f.xml"
    document.write_bytes(aggregate(squatter.read_bytes()))
    ok(db, "source", "add", "p", "--file", document, "--unsigned-ok")
    assert entity_id("squatter") not in rows(engine)
    assert_refused(
        admin(
            db,
            "source",
            "approve",
            "p",
            entity_id("squatter"),
            "--confirm-host",
            "other.example.org",
        ),
        "stays quarantined",
    )
    out = ok(
        db, "source", "approve", "p", entity_id("squatter"),
        "--confirm-host", "victim.example.org",
    )  # fmt: skip
    assert out == f"approved {entity_id('squatter')}\n"
    assert rows(engine)[entity_id("squatter")].source_id is not None


def test_sp_import_refuses_an_sp_a_source_brought(db, tmp_path):
    document = tmp_path / "f.xml"
    document.write_bytes(aggregate(entity("a")))
    ok(db, "source", "add", "p", "--file", document, "--unsigned-ok")
    single = tmp_path / "a.xml"
    single.write_bytes(entity("a"))
    assert_refused(
        admin(db, "sp", "import", single, "--replace"), "metadata source 'p'"
    )


def test_sp_check_exit_codes(db, engine, tmp_path):
    assert admin(db, "sp", "check", "--days", "30").returncode == 0
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=5)
    document = tmp_path / "f.xml"
    document.write_bytes(aggregate(entity("a"), valid_until=soon))
    ok(db, "source", "add", "p", "--file", document, "--unsigned-ok")

    result = admin(db, "sp", "check", "--days", "3")
    assert (result.returncode, result.stdout) == (0, "nothing expires within 3 days\n")
    manual = tmp_path / "m.xml"
    manual.write_bytes(entity("m", valid_until=soon))
    ok(db, "sp", "import", manual)
    result = admin(db, "sp", "check", "--days", "7")
    assert result.returncode == 1
    assert f"{entity_id('m')}: metadata expires at" in result.stdout
    ok(db, "sp", "remove", entity_id("m"), "--yes")
    result = admin(db, "sp", "check", "--days", "7")
    assert result.returncode == 1
    # The document's validity once, not again for each SP that inherits it.
    [line] = result.stdout.splitlines()
    assert line.startswith("source p: document expires at")
    # An SP whose own metadata expires sooner is named.
    sooner = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    document.write_bytes(aggregate(entity("a"), entity("b", valid_until=sooner)))
    ok(db, "source", "refresh", "p")
    result = admin(db, "sp", "check", "--days", "3")
    assert result.returncode == 1
    [line] = result.stdout.splitlines()
    assert line.startswith(f"{entity_id('b')}: metadata expires at")
    # Certificates: the test keys are valid for ten years.
    result = admin(db, "sp", "check", "--days", "4000")
    assert result.returncode == 1
    assert f"{entity_id('a')}: signing certificate SHA-256" in result.stdout
    assert_refused(admin(db, "sp", "check", "--days", "-1"), "--days must be")


def test_refresh_all_and_entity_filter(db, engine, tmp_path):
    one, two = tmp_path / "1.xml", tmp_path / "2.xml"
    one.write_bytes(aggregate(entity("a"), entity("b")))
    two.write_bytes(aggregate(entity("c")))
    ok(
        db,
        "source",
        "add",
        "one",
        "--file",
        one,
        "--unsigned-ok",
        "--only",
        entity_id("b"),
    )
    ok(db, "source", "add", "two", "--file", two, "--unsigned-ok")
    assert set(rows(engine)) == {entity_id("b"), entity_id("c")}
    two.write_bytes(aggregate(entity("c"), entity("d")))
    out = ok(db, "source", "refresh", "--all")
    assert "one: document unchanged" in out
    assert "two: 1 added, 0 updated, 1 unchanged" in out
    assert "one of the arguments NAME --all --loop is required" in fails(
        db, "source", "refresh"
    )


def test_an_sp_from_a_source_signs_in_end_to_end(testapp, dbsession, module, user):
    """An SP a signed source brought gets a signed, successful Response."""
    from idp.saml.sources import apply_document
    from tests.metadata_sources import MAX_VALID, NOW, make_source
    from tests.saml_pages import response_of, status_of
    from tests.saml_requests import authn_request, redirect_query
    from tests.signin import sign_in

    source = make_source(
        dbsession,
        unsigned_ok=False,
        anchor_pem=Path(federation_keys()[1]).read_text(),
        module_id=module.id,
    )
    document = make_aggregate([sp_entity(0), sp_entity(1)], signer=federation_keys())
    apply_document(dbsession, source, document, now=NOW, max_valid_until=MAX_VALID)
    acs = "https://sp0.example.edu.my/Shibboleth.sso/SAML2/POST"

    sign_in(testapp, user)
    page = testapp.get(
        "/saml/sso/redirect?" + redirect_query(authn_request(issuer=SP0, acs_url=acs))
    )

    assert page.forms["saml-post-form"].action == acs
    root = response_of(page)
    assert status_of(root) == ["urn:oasis:names:tc:SAML:2.0:status:Success"]
    assert root.get("Destination") == acs
    # Encrypted for the key its metadata publishes, as for any SP.
    encrypted = root.findall(
        "{urn:oasis:names:tc:SAML:2.0:assertion}EncryptedAssertion"
    )
    assert len(encrypted) == 1


def test_saml_29_a_squatter_gets_no_assertion_until_the_host_is_confirmed(
    testapp, dbsession, module, user, sp
):
    """SAML-29, end to end: a source's entity A lists an ACS on the host of
    the registered SP B (``sp``, https://sp.example.org). Before the check
    it was registered and a signed-in user's assertion about A went to B's
    host (tests/unit/saml/test_sources.py shows the registration); now A
    is quarantined and the IdP refuses it as an unknown SP, until an
    operator confirms the host for it."""
    from idp.saml.sources import apply_document, approve
    from tests.metadata_sources import MAX_VALID, NOW, make_source
    from tests.saml_pages import response_of
    from tests.saml_requests import authn_request, redirect_query
    from tests.signin import sign_in

    squat_acs = "https://sp.example.org/acs-squat"
    source = make_source(dbsession, module_id=module.id)
    document = aggregate(
        with_endpoint(entity("squatter"), "AssertionConsumerService", squat_acs)
    )
    report = apply_document(
        dbsession, source, document, now=NOW, max_valid_until=MAX_VALID
    )
    assert (
        "sp.example.org (used by https://sp.example.org/sp)"
        in (report.quarantined[entity_id("squatter")])
    )
    sign_in(testapp, user)
    request = authn_request(issuer=entity_id("squatter"), acs_url=squat_acs)

    page = testapp.get("/saml/sso/redirect?" + redirect_query(request), status=400)
    assert 'data-error-code="saml_unknown_sp"' in page.text
    assert "saml-post-form" not in page.forms

    approve(
        dbsession,
        source,
        entity_id("squatter"),
        now=NOW,
        max_valid_until=MAX_VALID,
        confirm_hosts=("sp.example.org",),
    )
    request = authn_request(issuer=entity_id("squatter"), acs_url=squat_acs)
    page = testapp.get("/saml/sso/redirect?" + redirect_query(request))
    assert page.forms["saml-post-form"].action == squat_acs
    assert response_of(page).get("Destination") == squat_acs


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [True, False], ids=["terminal", "pipe"])
def test_progress_is_a_bar_on_a_terminal_and_lines_otherwise(monkeypatch, tty):
    from idp.cli.source import _progress_printer

    err = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    show = _progress_printer()
    for done in range(100, 1001, 100):
        show(done, 1000)
    text = err.getvalue()
    if tty:
        assert text.count("\r[") == 10 and text.endswith("\n")
        assert "1000/1000 entities" in text and "/s, ETA 0 s" in text
    else:
        lines = text.splitlines()
        assert len(lines) == 10
        assert lines[-1].startswith("1000/1000 entities checked (")
