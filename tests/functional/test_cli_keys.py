"""``idp-admin keys rollover`` and ``metadata export --for``, as an operator runs them."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from lxml import etree
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp.models import (
    AuditEvent,
    IdpSession,
    MetadataFetch,
    ServiceProvider,
    SessionParticipant,
    SigningKey,
)
from tests.cli import admin, fails, ok
from tests.keys import published
from tests.saml_metadata import SP_ENTITY_ID, make_sp_metadata

OTHER_SP = "https://other.example.org/sp"
THIRD_SP = "https://third.example.org/sp"


@pytest.fixture
def keyed(db, tmp_path):
    """The scratch install with its first key and one SP registered."""
    ok(db, "keys", "generate")
    path = tmp_path / "sp.xml"
    path.write_bytes(make_sp_metadata())
    ok(db, "sp", "import", path)
    return db


def states(engine) -> dict[str, str]:
    with Session(engine) as session:
        return {row.kid: row.state for row in session.scalars(select(SigningKey))}


def audit(engine, name: str) -> list[dict]:
    with Session(engine) as session:
        return [
            event.detail
            for event in session.scalars(
                select(AuditEvent).where(AuditEvent.event == name)
            )
        ]


def backdate(engine, state: str, days: int) -> None:
    """As if the key in ``state`` had been prepared/activated ``days`` ago."""
    then = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    column = "prepared_at" if state == "next" else "activated_at"
    with Session(engine) as session, session.begin():
        session.execute(
            update(SigningKey).where(SigningKey.state == state).values({column: then})
        )


def kid_of(out: str) -> str:
    return re.search(r"next key ([0-9a-f]{16}) prepared", out).group(1)


def test_rollover_walks_through_every_step(keyed, engine, tmp_path):
    certs = tmp_path / "certs"
    out = ok(keyed, "keys", "rollover", "prepare")
    kid = kid_of(out)
    assert "recorded the existing signing key" in out
    assert f"copy both files to every node's {certs}" in out
    assert (certs / f"{kid}.key").stat().st_mode & 0o777 == 0o600
    assert sorted(states(engine).values()) == ["current", "next"]
    assert "activate from" in ok(keyed, "keys", "rollover", "status")

    backdate(engine, "next", 8)
    assert "may be activated now" in ok(keyed, "keys", "rollover", "status")
    out = ok(keyed, "keys", "rollover", "activate")
    assert f"idMe now signs with key {kid}" in out and "forced" not in out
    assert states(engine)[kid] == "current"
    assert audit(engine, "keys.activate")[0]["forced"] is False

    backdate(engine, "current", 8)
    out = ok(keyed, "keys", "rollover", "retire")
    assert "signing.key" in out  # the adopted key kept its file names
    assert sorted(states(engine).values()) == ["current", "retired"]
    exported = tmp_path / "idp.xml"
    ok(keyed, "metadata", "export", exported)
    [signing] = [fp for use, fp in published(exported.read_bytes()) if use == "signing"]
    assert signing.startswith(kid)


def test_ops_08_cli_activate_early_is_refused_and_force_is_audited(keyed, engine):
    """OPS-08: 'activate' the day of 'prepare' is refused; --force says so and is audited."""
    kid = kid_of(ok(keyed, "keys", "rollover", "prepare"))
    error = fails(keyed, "keys", "rollover", "activate")
    assert "less than idp.key_rollover_min_publish_days (7 d)" in error
    assert "--force" in error
    assert states(engine)[kid] == "next"
    assert audit(engine, "keys.activate") == []
    out = ok(keyed, "keys", "rollover", "activate", "--force")
    assert "forced before the minimum publish period; audited" in out
    [event] = audit(engine, "keys.activate")
    assert event["forced"] is True and event["kid"] == kid


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("activate", "there is no next key; run 'keys rollover prepare' first"),
        ("retire", "there is no previous key to retire"),
    ],
)
def test_steps_out_of_order_are_refused_in_one_line(keyed, step, message):
    assert fails(keyed, "keys", "rollover", step) == f"idp-admin: {message}"


def test_a_second_prepare_is_refused_and_writes_no_files(keyed, tmp_path):
    ok(keyed, "keys", "rollover", "prepare")
    files = sorted((tmp_path / "certs").iterdir())
    assert "is already prepared" in fails(keyed, "keys", "rollover", "prepare")
    assert sorted((tmp_path / "certs").iterdir()) == files


def test_prepare_without_a_key_fails_clearly(db):
    error = fails(db, "keys", "rollover", "prepare")
    assert "signing.key is missing" in error


def test_status_says_per_sp_whether_it_fetched_the_next_key(keyed, engine, tmp_path):
    for entity_id in (OTHER_SP, THIRD_SP):
        path = tmp_path / "more.xml"
        path.write_bytes(make_sp_metadata(entity_id))
        ok(keyed, "sp", "import", path)
    ok(keyed, "keys", "rollover", "prepare")
    with Session(engine) as session, session.begin():
        prepared = session.scalars(
            select(SigningKey.prepared_at).where(SigningKey.state == "next")
        ).one()
        for n, (entity_id, at) in enumerate(
            [
                (SP_ENTITY_ID, prepared + dt.timedelta(hours=1)),
                (OTHER_SP, prepared - dt.timedelta(days=1)),
                ("", prepared + dt.timedelta(hours=2)),
            ]
        ):
            session.add(
                MetadataFetch(
                    digest=f"{n:064d}",
                    sp_entity_id=entity_id,
                    client_address=f"198.51.100.{n}",
                    user_agent="Shibboleth/3.4",
                    endpoint="metadata",
                    first_at=at,
                    last_at=at,
                    count=3,
                )
            )
        # Two sign-ins to OTHER_SP since prepare, one to THIRD_SP before it.
        other, third = (
            session.scalars(
                select(ServiceProvider.id).where(ServiceProvider.entity_id == e)
            ).one()
            for e in (OTHER_SP, THIRD_SP)
        )
        idp_session = IdpSession(
            token_hash="0" * 64, expires_at=prepared + dt.timedelta(days=1)
        )
        session.add(idp_session)
        session.flush()
        for sp_id, at in (
            (other, prepared + dt.timedelta(minutes=5)),
            (other, prepared + dt.timedelta(minutes=6)),
            (third, prepared - dt.timedelta(minutes=5)),
        ):
            session.add(
                SessionParticipant(
                    session_id=idp_session.id,
                    sp_id=sp_id,
                    name_id="n",
                    name_id_format="f",
                    session_index="s",
                    created_at=at,
                )
            )
    out = ok(keyed, "keys", "rollover", "status")
    lines = {line.split()[0]: line for line in out.splitlines() if "://" in line}
    assert lines[OTHER_SP].endswith("; 2 sign-ins since")
    assert lines[THIRD_SP].endswith("; 0 sign-ins since")
    assert lines[SP_ENTITY_ID].endswith("; 0 sign-ins since")
    assert "yes" in lines[SP_ENTITY_ID].split()[1]
    assert "198.51.100.0 (Shibboleth/3.4)" in lines[SP_ENTITY_ID]
    assert lines[OTHER_SP].split()[1:3] == ["not", "yet"]
    assert lines[THIRD_SP].split()[1] == "unknown"
    assert "1 of 3 enabled SPs have fetched the new key" in out
    assert "198.51.100.2 (Shibboleth/3.4)" in out  # the unattributed fetch


def test_export_for_a_partner_writes_metadata_and_a_covering_note(
    keyed, engine, tmp_path
):
    kid = kid_of(ok(keyed, "keys", "rollover", "prepare"))
    target = tmp_path / "out" / "for-sp.xml"
    out = ok(keyed, "metadata", "export", "--for", SP_ENTITY_ID, target)
    assert f"covering note written to {target.with_suffix('.txt')}" in out
    xml = target.read_bytes()
    root = etree.fromstring(xml)
    assert root.prefix == "md"
    note = target.with_suffix(".txt").read_text()
    assert f"For:      {SP_ENTITY_ID}" in note
    assert re.search(
        r"Your metadata URL: +http://127\.0\.0\.1:6543/saml/metadata\?sp=1-[0-9a-f]{24}",
        note,
    )
    assert "/saml/mdq/sp/1-" in note
    assert f"Metadata valid until: {root.get('validUntil')}" in note
    assert (
        "SingleSignOnService  HTTP-POST      http://127.0.0.1:6543/saml/sso/post"
        in note
    )
    with Session(engine) as session:
        upcoming = session.scalars(
            select(SigningKey).where(SigningKey.state == "next")
        ).one()
    colons = ":".join(upcoming.fingerprint.upper()[i : i + 2] for i in range(0, 64, 2))
    assert f"SHA-256 fingerprint: {colons}" in note
    assert "Next key: published now, signs from about" in note
    assert upcoming.kid == kid
    assert "Technical" in note and "Security" in note


def test_export_for_an_unknown_sp_fails_in_one_line(keyed, tmp_path):
    error = fails(keyed, "metadata", "export", "--for", OTHER_SP, tmp_path / "x.xml")
    assert error.startswith(f"idp-admin: no SP is registered as '{OTHER_SP}'")
    assert not (tmp_path / "x.xml").exists()
    assert "give a FILE path" in fails(
        keyed, "metadata", "export", "--for", SP_ENTITY_ID, "-"
    )


def test_a_node_missing_the_next_key_cannot_export(keyed, tmp_path):
    kid = kid_of(ok(keyed, "keys", "rollover", "prepare"))
    (tmp_path / "certs" / f"{kid}.key").unlink()
    error = fails(keyed, "metadata", "export", tmp_path / "x.xml")
    assert f"{kid}.key is missing" in error
    assert "copy" in error
    error = fails(keyed, "keys", "rollover", "activate", "--force")
    assert f"cannot activate key {kid}" in error
    assert admin(keyed, "keys", "rollover", "status").returncode == 0


def test_keys_generate_refuses_once_the_database_records_keys(keyed, tmp_path):
    """Replacing a recorded key's file would leave every node unable to sign."""
    key = tmp_path / "certs" / "signing.key"
    before = key.read_bytes()
    ok(keyed, "keys", "rollover", "prepare")
    error = fails(keyed, "keys", "generate", "--force")
    assert "change them with 'keys rollover prepare'" in error
    assert key.read_bytes() == before


def test_status_before_any_rollover_shows_the_unrecorded_key(keyed, tmp_path):
    out = ok(keyed, "keys", "rollover", "status")
    assert f"current   {tmp_path / 'certs' / 'signing.key'}  SHA-256 " in out
    assert "not recorded yet" in out
    assert "no rollover under way" in out
    assert f"{SP_ENTITY_ID}  unknown" in out
