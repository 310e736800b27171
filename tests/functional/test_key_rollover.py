"""idMe's key rollover on running nodes: metadata, signing, and missing files.

Two "nodes" are two apps on the one test database, each with its own
``certs/`` (tests/keys.py), as two servers behind a load balancer. Each step
runs as ``idp-admin`` runs it (``idp.saml.rollover`` in the test's
transaction) and both nodes must follow at their next request, with no
restart. The steps' dates are passed in, so a week of publishing is no
sleep.
"""

from __future__ import annotations

import base64
import datetime as dt

import pytest
import webtest
from lxml import etree
from sqlalchemy import select

from idp.models import AuditEvent, SigningKey
from idp.saml import rollover
from idp.saml.keys import make_pem_pair, write_private_key
from tests.app import environ, make_app
from tests.keys import copy_key, node_certs, published, signed_by
from tests.saml_requests import authn_request, redirect_query
from tests.signin import sign_in

WEEK = dt.timedelta(days=7)
HOUR = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def node_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("nodes")
    return root / "a", root / "b"


@pytest.fixture(scope="module")
def node_apps(settings, db_engine, node_dirs, keypair):
    for folder in node_dirs:
        node_certs(folder, keypair)
    return tuple(
        make_app({**settings, "idp.certs_dir": str(folder)}, db_engine)
        for folder in node_dirs
    )


@pytest.fixture
def nodes(node_apps, node_dirs, keypair, tm, dbsession):
    """Browsers on node A and node B; each node's certs/ back to signing.* only."""
    for folder in node_dirs:
        node_certs(folder, keypair)
    return tuple(
        webtest.TestApp(app, extra_environ=environ(tm, dbsession)) for app in node_apps
    )


def fingerprint(folder, kid_or_name: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate((folder / kid_or_name).read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex()


def prepare(dbsession, folder, now):
    return rollover.prepare(dbsession, folder, "idp.test", key_size=2048, now=now).key


def sso_response(client) -> bytes:
    """The Response a signed-in browser gets for a fresh AuthnRequest."""
    query = redirect_query(authn_request())
    page = client.get("/saml/sso/redirect?" + query, status=200)
    return base64.b64decode(page.forms["saml-post-form"]["SAMLResponse"].value)


def test_metadata_is_written_with_md_and_ds_prefixes(testapp):
    xml = testapp.get("/saml/metadata").body
    root = etree.fromstring(xml)
    assert root.prefix == "md"
    assert b"ns0:" not in xml and b"ns1:" not in xml
    assert b"<ds:Signature" in xml and b"<md:IDPSSODescriptor" in xml
    # Declared once, on the root.
    assert xml.count(b'xmlns:md="') == 1 and xml.count(b'xmlns:ds="') == 1
    assert root.get("validUntil")


def test_an_upgraded_install_signs_with_signing_key_until_it_is_recorded(
    nodes, node_dirs, dbsession, sp, user, keypair
):
    node_a, _ = nodes
    certs_a, _ = node_dirs
    legacy = fingerprint(certs_a, "signing.crt")
    assert published(node_a.get("/saml/metadata").body) == [
        ("signing", legacy),
        ("encryption", legacy),
    ]
    sign_in(node_a, user)
    assert signed_by(sso_response(node_a), certs_a / "signing.crt")
    now = dt.datetime.now(dt.UTC)
    upcoming = prepare(dbsession, certs_a, now)
    [current] = dbsession.scalars(
        select(SigningKey).where(SigningKey.state == "current")
    ).all()
    assert current.fingerprint == legacy
    assert [e.event for e in dbsession.scalars(select(AuditEvent))][-2:] == [
        "keys.adopt",
        "keys.prepare",
    ]
    # The adopted key keeps its file names: nothing for the operator to move.
    assert not (certs_a / f"{current.kid}.key").exists()
    assert (certs_a / f"{upcoming.kid}.key").stat().st_mode & 0o777 == 0o600


def test_prepare_publishes_the_next_key_and_signing_goes_on_with_the_current(
    nodes, node_dirs, dbsession, sp, user
):
    node_a, node_b = nodes
    certs_a, certs_b = node_dirs
    legacy = fingerprint(certs_a, "signing.crt")
    node_a.get("/saml/metadata")  # cached before the change
    upcoming = prepare(dbsession, certs_a, dt.datetime.now(dt.UTC))
    copy_key(certs_a, certs_b, upcoming.kid)
    for node in nodes:
        assert published(node.get("/saml/metadata").body) == [
            ("signing", legacy),
            ("encryption", legacy),
            ("signing", upcoming.fingerprint),
            ("encryption", upcoming.fingerprint),
        ]
    sign_in(node_b, user)
    xml = sso_response(node_b)
    assert signed_by(xml, certs_b / "signing.crt")
    assert not signed_by(xml, certs_b / f"{upcoming.kid}.crt")


def test_ops_08_activating_before_the_publish_period_is_refused(
    nodes, node_dirs, dbsession
):
    """OPS-08: switching to a key SPs may lack is refused until it was published long enough."""
    certs_a, _ = node_dirs
    prepared_at = dt.datetime.now(dt.UTC) - WEEK + HOUR
    upcoming = prepare(dbsession, certs_a, prepared_at)
    with pytest.raises(rollover.RolloverRefused, match="activate from"):
        rollover.activate(
            dbsession, certs_a, now=prepared_at + WEEK - HOUR, min_publish_days=7
        )
    assert dbsession.get(SigningKey, upcoming.kid).state == "next"
    # Control: the same step a week after prepare goes through.
    current, previous, forced = rollover.activate(
        dbsession, certs_a, now=prepared_at + WEEK, min_publish_days=7
    )
    assert (current.kid, current.state, previous.state, forced) == (
        upcoming.kid,
        "current",
        "previous",
        False,
    )


def test_forcing_an_early_activation_is_audited_as_forced(node_dirs, nodes, dbsession):
    certs_a, _ = node_dirs
    now = dt.datetime.now(dt.UTC)
    prepare(dbsession, certs_a, now)
    *_, forced = rollover.activate(
        dbsession, certs_a, now=now + HOUR, min_publish_days=7, force=True
    )
    assert forced
    event = dbsession.scalars(
        select(AuditEvent).where(AuditEvent.event == "keys.activate")
    ).one()
    assert event.detail["forced"] is True
    assert event.detail["published_seconds"] == 3600


def test_both_nodes_sign_with_the_new_key_after_activate_without_restart(
    nodes, node_apps, node_dirs, dbsession, sp, user, caplog
):
    node_a, node_b = nodes
    certs_a, certs_b = node_dirs
    legacy = fingerprint(certs_a, "signing.crt")
    sign_in(node_a, user)
    sign_in(node_b, user)
    assert signed_by(sso_response(node_a), certs_a / "signing.crt")
    assert signed_by(sso_response(node_b), certs_b / "signing.crt")
    now = dt.datetime.now(dt.UTC)
    upcoming = prepare(dbsession, certs_a, now - WEEK)
    copy_key(certs_a, certs_b, upcoming.kid)
    rollover.activate(dbsession, certs_a, now=now, min_publish_days=7)
    caplog.clear()
    caplog.set_level("INFO", logger="idp.saml.keyring")
    for node, certs in zip(nodes, node_dirs, strict=True):
        xml = sso_response(node)
        assert signed_by(xml, certs / f"{upcoming.kid}.crt")
        assert not signed_by(xml, certs / "signing.crt")
        # The old key stays published, after the new one, and still decrypts.
        assert published(node.get("/saml/metadata").body) == [
            ("signing", upcoming.fingerprint),
            ("encryption", upcoming.fingerprint),
            ("signing", legacy),
            ("encryption", legacy),
        ]
    # Each node says once that it took up the step.
    took_up = f"idMe's keys on this node: current {upcoming.kid}, previous "
    assert len([r for r in caplog.records if took_up in r.getMessage()]) >= 2
    server = node_apps[1].registry["idp.saml.servers"].get(dbsession)
    decrypting = {pair["cert_file"] for pair in server.config.encryption_keypairs}
    assert decrypting == {
        str(certs_b / f"{upcoming.kid}.crt"),
        str(certs_b / "signing.crt"),
    }
    # The metadata itself is signed with the new key.
    metadata = etree.fromstring(node_b.get("/saml/metadata").body)
    shown = metadata.findtext(
        "{http://www.w3.org/2000/09/xmldsig#}Signature//"
        "{http://www.w3.org/2000/09/xmldsig#}X509Certificate"
    )
    assert fingerprint(certs_b, f"{upcoming.kid}.crt") == _der_sha256(shown)


def _der_sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(base64.b64decode("".join(text.split()))).hexdigest()


def test_retire_waits_for_the_overlap_then_drops_the_old_key(
    nodes, node_dirs, dbsession
):
    node_a, _ = nodes
    certs_a, _ = node_dirs
    now = dt.datetime.now(dt.UTC)
    upcoming = prepare(dbsession, certs_a, now - 2 * WEEK)
    rollover.activate(dbsession, certs_a, now=now - WEEK + HOUR, min_publish_days=7)
    with pytest.raises(rollover.RolloverRefused, match="min_overlap_days"):
        rollover.retire(dbsession, now=now, min_overlap_days=7)
    retired = rollover.retire(dbsession, now=now + HOUR, min_overlap_days=7)
    assert retired.state == "retired" and retired.retired_at == now + HOUR
    assert published(node_a.get("/saml/metadata").body) == [
        ("signing", upcoming.fingerprint),
        ("encryption", upcoming.fingerprint),
    ]
    with pytest.raises(rollover.RolloverRefused, match="no previous key"):
        rollover.retire(dbsession, now=now + HOUR, min_overlap_days=0)


def test_prepare_is_refused_while_a_next_or_previous_key_is_published(
    node_dirs, nodes, dbsession
):
    certs_a, _ = node_dirs
    now = dt.datetime.now(dt.UTC)
    upcoming = prepare(dbsession, certs_a, now - WEEK)
    files = set(certs_a.iterdir())
    with pytest.raises(rollover.RolloverRefused, match="already prepared"):
        prepare(dbsession, certs_a, now)
    rollover.activate(dbsession, certs_a, now=now, min_publish_days=7)
    with pytest.raises(rollover.RolloverRefused, match="retire it first"):
        prepare(dbsession, certs_a, now)
    assert set(certs_a.iterdir()) == files  # no stray key written
    assert upcoming.kid in {path.stem for path in files}


def test_a_node_without_the_next_key_file_refuses_to_sign_and_says_which(
    nodes, node_dirs, dbsession, sp, user, caplog
):
    """A node that lacks a published key never signs with another one instead."""
    node_a, node_b = nodes
    certs_a, certs_b = node_dirs
    sign_in(node_a, user)
    sign_in(node_b, user)
    assert node_b.get("/healthz").json["keys"] == "ok"
    now = dt.datetime.now(dt.UTC)
    upcoming = prepare(dbsession, certs_a, now - WEEK)
    rollover.activate(dbsession, certs_a, now=now, min_publish_days=7)
    # Node A has the files; node B was forgotten.
    assert signed_by(sso_response(node_a), certs_a / f"{upcoming.kid}.crt")
    health = node_b.get("/healthz", status=503).json
    assert health["reasons"] == {
        "keys": f"{upcoming.kid}.key (current key) is missing on this node"
    }
    assert str(certs_b) not in str(health)
    query = redirect_query(authn_request())
    page = node_b.get("/saml/sso/redirect?" + query, status=503)
    assert 'data-error-code="keys_unavailable"' in page.text
    assert "SAMLResponse" not in page.text
    assert "Log masuk tidak tersedia pada pelayan ini" in page.text
    assert "Sign-in is unavailable on this server" in page.text
    node_b.get("/saml/metadata", status=503)
    assert f"{certs_b / upcoming.kid}.key is missing" in caplog.text
    # The operator copies the files: node B signs with the new key at once.
    copy_key(certs_a, certs_b, upcoming.kid)
    assert node_b.get("/healthz").json["keys"] == "ok"
    assert signed_by(sso_response(node_b), certs_b / f"{upcoming.kid}.crt")


def test_a_key_file_that_is_not_the_listed_certificate_is_refused(
    nodes, node_dirs, dbsession
):
    """An attacker (or a slip) putting another pair under the kid's name is not used."""
    _, node_b = nodes
    certs_a, certs_b = node_dirs
    upcoming = prepare(dbsession, certs_a, dt.datetime.now(dt.UTC))
    key_pem, cert_pem = make_pem_pair("idp.test", key_size=2048)
    write_private_key(certs_b / f"{upcoming.kid}.key", key_pem)
    (certs_b / f"{upcoming.kid}.crt").write_bytes(cert_pem)
    health = node_b.get("/healthz", status=503).json
    assert health["reasons"]["keys"] == (
        f"{upcoming.kid}.crt is not the next key the database lists"
    )
    node_b.get("/saml/metadata", status=503)


@pytest.mark.postgresql
def test_two_operators_preparing_at_once_make_one_next_key(
    committing_testapp, db_engine, tmp_path, keypair
):
    """The database settles a race: one prepare wins, the other leaves nothing."""
    import threading

    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    certs = node_certs(tmp_path / "certs", keypair)
    with Session(db_engine) as session, session.begin():
        # Recorded first, so that only the two new "next" rows can collide.
        rollover.adopt_current(session, certs, dt.datetime.now(dt.UTC))
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def operator():
        with Session(db_engine) as session:
            try:
                with session.begin():
                    barrier.wait()
                    prepare(session, certs, dt.datetime.now(dt.UTC))
                outcomes.append("prepared")
            except (IntegrityError, rollover.RolloverRefused):
                outcomes.append("refused")

    threads = [threading.Thread(target=operator) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["prepared", "refused"]
    with Session(db_engine) as session:
        states = sorted(session.scalars(select(SigningKey.state)).all())
        [winner] = session.scalars(
            select(SigningKey.kid).where(SigningKey.state == "next")
        ).all()
    assert states == ["current", "next"]
    # The loser's key files went with its transaction.
    assert sorted(path.name for path in certs.iterdir()) == sorted(
        ["signing.crt", "signing.key", f"{winner}.crt", f"{winner}.key"]
    )


@pytest.mark.parametrize("lang", ["ms", "en"])
def test_the_developers_page_shows_the_next_key_during_a_rollover(
    nodes, node_dirs, dbsession, lang
):
    node_a, _ = nodes
    certs_a, _ = node_dirs
    page = node_a.get(f"/developers?lang={lang}")
    assert page.html.find(id="next-signing-fingerprint") is None
    upcoming = prepare(dbsession, certs_a, dt.datetime.now(dt.UTC))
    page = node_a.get(f"/developers?lang={lang}")
    shown = page.html.find(id="next-signing-fingerprint").get_text(strip=True)
    assert shown.replace(":", "").lower() == upcoming.fingerprint
    current = page.html.find(id="signing-fingerprint").get_text(strip=True)
    assert current.replace(":", "").lower() == fingerprint(certs_a, "signing.crt")
