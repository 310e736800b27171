"""idp.saml.sources: a partner's document applied to the registry.

Each test applies documents built in tests/metadata_sources.py to a source
in the rolled-back ``dbsession`` and reads what the registry, the
quarantine, the held changes and the audit log hold afterwards.
"""

from __future__ import annotations

import datetime as dt

import pytest
from lxml import etree
from sqlalchemy import func, select

from idp.models import (
    AuditEvent,
    MetadataSource,
    PendingChange,
    QuarantinedEntity,
    ServiceProvider,
)
from idp.saml import registry
from idp.saml.sources import (
    SourceError,
    apply_document,
    approve,
    parse_duration,
    refresh,
)
from tests.factories import count, events, make_module
from tests.metadata_sources import (
    MAX_VALID,
    NOW,
    aggregate,
    apply,
    entity,
    entity_id,
    idp_entity,
    make_source,
    with_endpoint,
)
from tests.saml_metadata import MD


def sps(dbsession) -> dict[str, ServiceProvider]:
    return {sp.entity_id: sp for sp in dbsession.scalars(select(ServiceProvider)).all()}


def quarantine(dbsession, source) -> dict[str, str]:
    rows = dbsession.scalars(
        select(QuarantinedEntity).where(QuarantinedEntity.source_id == source.id)
    )
    return {row.entity_id: row.reason for row in rows}


def no_ascs(data: bytes) -> bytes:
    root = etree.fromstring(data)
    for element in list(root.iter(f"{{{MD}}}AssertionConsumerService")):
        element.getparent().remove(element)
    return etree.tostring(root)


def bad_certificate(data: bytes) -> bytes:
    root = etree.fromstring(data)
    cert = next(root.iter("{http://www.w3.org/2000/09/xmldsig#}X509Certificate"))
    cert.text = "TUlJQ2JhZA=="
    return etree.tostring(root)


def test_saml_28_bad_entities_are_quarantined_by_name_and_the_rest_load(dbsession):
    """SAML-28: one bad entity never blocks the good ones; each reason is named."""
    module = make_module(dbsession, "EMIS")
    source = make_source(dbsession, module_id=module.id)
    document = aggregate(
        entity("good1"),
        entity("expired", valid_until=NOW - dt.timedelta(days=1)),
        with_endpoint(
            entity("plain"), "AssertionConsumerService", "http://plain.example.org/acs"
        ),
        bad_certificate(entity("badkey")),
        no_ascs(entity("noacs")),
        entity("twice"),
        entity("twice"),
        idp_entity("anidp"),
        entity("good2"),
    )
    report = apply(dbsession, source, document)

    assert sorted(report.added) == [entity_id("good1"), entity_id("good2")]
    assert report.skipped == 1
    reasons = quarantine(dbsession, source)
    assert reasons == report.quarantined
    assert set(reasons) == {
        entity_id(name) for name in ("expired", "plain", "badkey", "noacs", "twice")
    }
    assert "expired at" in reasons[entity_id("expired")]
    assert "http://plain.example.org/acs" in reasons[entity_id("plain")]
    assert "not a valid certificate" in reasons[entity_id("badkey")]
    assert "no AssertionConsumerService" in reasons[entity_id("noacs")]
    assert "appears 2 times" in reasons[entity_id("twice")]
    assert all("\n" not in reason for reason in reasons.values())
    registered = sps(dbsession)
    assert set(registered) == {entity_id("good1"), entity_id("good2")}
    good = registered[entity_id("good1")]
    assert good.source_id == source.id
    assert good.module_id == module.id
    assert good.attributes_released == ["uid", "isMemberOf"]
    # The inherited validUntil is written on the stored entity.
    assert good.metadata_valid_until == report.valid_until
    assert source.document_sha256 is not None
    assert report.cache_duration == 6 * 3600
    [event] = events(dbsession, "source.refreshed")
    assert sorted(event.detail["added"]) == sorted(report.added)
    assert event.detail["quarantined"] == report.quarantined


def test_an_unchanged_document_is_not_read_again(dbsession):
    source = make_source(dbsession)
    document = aggregate(entity("a"), entity("b"))
    apply(dbsession, source, document)
    generation = registry.current_version(dbsession)[0]
    audited = count(dbsession, AuditEvent)

    report = apply(dbsession, source, document)

    assert report.document_changed is False
    assert report.added == report.updated == report.removed == []
    assert registry.current_version(dbsession)[0] == generation
    assert count(dbsession, AuditEvent) == audited


def test_a_trust_change_is_held_then_approved(dbsession):
    source = make_source(dbsession)
    apply(dbsession, source, aggregate(entity("a"), entity("b")))
    before = sps(dbsession)[entity_id("a")].metadata_sha256

    moved = with_endpoint(
        entity("a"), "AssertionConsumerService", "https://a.example.org/acs2"
    )
    report = apply(dbsession, source, aggregate(moved, entity("b")))

    assert report.held == [entity_id("a")]
    assert report.unchanged == [entity_id("b")]
    assert sps(dbsession)[entity_id("a")].metadata_sha256 == before
    [held] = dbsession.scalars(select(PendingChange)).all()
    assert held.diff == [
        "AssertionConsumerService removed: https://a.example.org/acs "
        "(urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST)",
        "AssertionConsumerService added: https://a.example.org/acs2 "
        "(urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST)",
    ]
    [event] = events(dbsession, "sp.metadata_held")
    assert event.detail["changes"] == held.diff

    assert approve(
        dbsession, source, entity_id("a"), now=NOW, max_valid_until=MAX_VALID
    ) == [entity_id("a")]
    sp = sps(dbsession)[entity_id("a")]
    assert sp.metadata_sha256 == held.metadata_sha256
    assert [
        e.location for e in registry.sp_metadata(sp).assertion_consumer_services
    ] == ["https://a.example.org/acs2"]
    assert count(dbsession, PendingChange) == 0
    [event] = events(dbsession, "sp.metadata_changed")
    assert event.detail["approved"] is True


def test_auto_apply_applies_trust_changes_and_audits_the_diff(dbsession):
    source = make_source(dbsession, auto_apply=True)
    apply(dbsession, source, aggregate(entity("a")))
    rekeyed = entity("a", key="src-a-next")

    report = apply(dbsession, source, aggregate(rekeyed))

    assert report.updated == [entity_id("a")]
    assert count(dbsession, PendingChange) == 0
    [event] = events(dbsession, "sp.metadata_changed")
    assert event.detail["entity_id"] == entity_id("a")
    assert [line.split(":")[0] for line in event.detail["changes"]] == [
        "signing certificate removed",
        "signing certificate added",
    ]


def test_entities_gone_from_the_document_are_removed(dbsession):
    source = make_source(dbsession)
    apply(dbsession, source, aggregate(entity("a"), entity("b")))
    generation = registry.current_version(dbsession)[0]

    report = apply(dbsession, source, aggregate(entity("b")))

    assert report.removed == [entity_id("a")]
    assert set(sps(dbsession)) == {entity_id("b")}
    assert registry.current_version(dbsession)[0] == generation + 1


def test_a_quarantined_entity_keeps_its_last_good_metadata(dbsession):
    source = make_source(dbsession)
    apply(dbsession, source, aggregate(entity("a")))
    stored = sps(dbsession)[entity_id("a")].metadata_sha256

    report = apply(dbsession, source, aggregate(no_ascs(entity("a"))))

    assert report.removed == []
    assert entity_id("a") in report.quarantined
    assert sps(dbsession)[entity_id("a")].metadata_sha256 == stored


def test_an_entity_id_clash_with_a_manual_sp_or_another_source_is_quarantined(
    dbsession,
):
    registry.import_sp(dbsession, entity("manual"))
    first = make_source(dbsession, "first")
    apply(dbsession, first, aggregate(entity("shared")))
    second = make_source(dbsession, "second")

    report = apply(
        dbsession, second, aggregate(entity("manual"), entity("shared"), entity("own"))
    )

    assert report.added == [entity_id("own")]
    assert "by 'sp import' (a manual SP)" in report.quarantined[entity_id("manual")]
    assert "by the source 'first'" in report.quarantined[entity_id("shared")]
    registered = sps(dbsession)
    assert registered[entity_id("manual")].source_id is None
    assert registered[entity_id("shared")].source_id == first.id


def test_sp_import_never_overwrites_an_sp_a_source_brought(dbsession):
    source = make_source(dbsession)
    apply(dbsession, source, aggregate(entity("a")))
    with pytest.raises(registry.MetadataError, match="metadata source 'partner'"):
        registry.import_sp(dbsession, entity("a", key="other"), replace=True)


def test_the_entity_filter_keeps_only_the_entities_it_names(dbsession):
    source = make_source(dbsession, entity_filter=[entity_id("b")])
    report = apply(dbsession, source, aggregate(entity("a"), entity("b")))
    assert report.added == [entity_id("b")]
    assert report.filtered == 1
    assert set(sps(dbsession)) == {entity_id("b")}


def test_saml_29_an_entity_claiming_another_entitys_host_is_quarantined(dbsession):
    """SAML-29: A lists its ACS on B's host; both are named, A gets nothing.

    Without the check (claimed_hosts returning nothing) the aggregate
    registered A with an ACS on B's host, and idMe would post assertions
    about A's users, and logout messages, to a host people trust as B's.
    """
    registry.import_sp(dbsession, entity("victim"))
    source = make_source(dbsession)
    squatter = with_endpoint(
        entity("squatter"),
        "AssertionConsumerService",
        "https://victim.example.org/acs-x",
    )

    report = apply(dbsession, source, aggregate(squatter, entity("fine")))

    reason = report.quarantined[entity_id("squatter")]
    assert "victim.example.org (used by https://victim.example.org/sp)" in reason
    assert entity_id("squatter") not in sps(dbsession)
    assert report.added == [entity_id("fine")]

    # Once an operator confirms the host for it, it is registered.
    approved = approve(
        dbsession,
        source,
        entity_id("squatter"),
        now=NOW,
        max_valid_until=MAX_VALID,
        confirm_hosts=("victim.example.org",),
    )
    assert approved == [entity_id("squatter")]
    assert entity_id("squatter") in sps(dbsession)
    assert quarantine(dbsession, source) == {}
    assert source.confirmed_hosts == {entity_id("squatter"): ["victim.example.org"]}
    [event] = events(dbsession, "source.host_confirmed")
    assert event.detail["hosts"] == ["victim.example.org"]


def test_saml_29_two_new_entities_contesting_one_host_both_wait(dbsession):
    source = make_source(dbsession)
    one = with_endpoint(
        entity("one"), "AssertionConsumerService", "https://shared.example.org/1"
    )
    two = with_endpoint(
        entity("two"), "AssertionConsumerService", "https://shared.example.org/2"
    )
    report = apply(dbsession, source, aggregate(one, two))
    assert report.added == []
    assert entity_id("two") in report.quarantined[entity_id("one")]
    assert entity_id("one") in report.quarantined[entity_id("two")]


def test_saml_29_sp_import_refuses_another_sps_host_unless_confirmed(dbsession):
    """SAML-29: the same rule for a manual import, with --confirm-host."""
    registry.import_sp(dbsession, entity("victim"))
    squatter = with_endpoint(
        entity("squatter"), "SingleLogoutService", "https://victim.example.org/slo"
    )
    with pytest.raises(registry.HostClaimed, match=r"victim\.example\.org"):
        registry.import_sp(dbsession, squatter)
    sp = registry.import_sp(dbsession, squatter, confirm_hosts=("victim.example.org",))
    assert sp.entity_id == entity_id("squatter")
    # A host it already had stays its own on re-import.
    registry.import_sp(dbsession, squatter)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            aggregate(entity("a"), valid_until=NOW - dt.timedelta(minutes=1)),
            "the document expired at",
        ),
        (
            aggregate(entity("a"), valid_until=NOW + dt.timedelta(days=29)),
            "more than 28 days away",
        ),
        (aggregate(entity("a"), cache_duration="six hours"), "is not an xs:duration"),
        (b"<md:EntitiesDescriptor", "not well-formed"),
        (b"\xff\xfe<a/>", "not UTF-8"),
        (
            b'<!DOCTYPE x [<!ENTITY e "e">]><md:EntitiesDescriptor xmlns:md="'
            + MD.encode()
            + b'"/>',
            "DOCTYPE",
        ),
        (b"<html/>", "not SAML metadata"),
    ],
    ids=["expired", "too_far", "duration", "malformed", "encoding", "doctype", "html"],
)
def test_an_unusable_document_changes_nothing(dbsession, document, message):
    source = make_source(dbsession)
    with pytest.raises(SourceError, match=message):
        apply(dbsession, source, document)
    dbsession.flush()
    assert count(dbsession, ServiceProvider) == 0
    assert count(dbsession, QuarantinedEntity) == 0
    assert source.document_sha256 is None


def test_saml_28_no_anchor_and_not_unsigned_ok_is_refused(dbsession):
    """SAML-28: unsigned where a signature is required: nothing is read."""
    source = make_source(dbsession, unsigned_ok=False)
    with pytest.raises(SourceError, match="no trust anchor"):
        apply_document(
            dbsession,
            source,
            aggregate(entity("a")),
            now=NOW,
            max_valid_until=MAX_VALID,
        )
    assert count(dbsession, ServiceProvider) == 0


def test_nested_groups_pass_the_earliest_valid_until_down(dbsession):
    source = make_source(dbsession)
    soon = NOW + dt.timedelta(days=2)
    inner = etree.fromstring(aggregate(entity("a"), valid_until=soon))
    outer = etree.fromstring(aggregate(entity("b")))
    outer.append(inner)
    report = apply(dbsession, source, etree.tostring(outer))
    assert sorted(report.added) == [entity_id("a"), entity_id("b")]
    registered = sps(dbsession)
    assert registered[entity_id("a")].metadata_valid_until == soon
    assert registered[entity_id("b")].metadata_valid_until == report.valid_until


def test_progress_is_reported(dbsession):
    source = make_source(dbsession)
    seen = []
    apply_document(
        dbsession,
        source,
        aggregate(entity("a"), entity("b")),
        now=NOW,
        max_valid_until=MAX_VALID,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(2, 2)]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("PT6H", 21600), ("P1D", 86400), ("PT30M", 1800), ("P1DT1S", 86401)],
)
def test_cache_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["P", "PT", "6H", "P1DT", "-PT1H"])
def test_bad_cache_durations(value):
    with pytest.raises(ValueError, match="xs:duration"):
        parse_duration(value)


def test_refresh_reads_a_file_source(dbsession, tmp_path):
    path = tmp_path / "federation.xml"
    path.write_bytes(aggregate(entity("a")))
    source = make_source(dbsession, location=str(path))
    report = refresh(dbsession, source, now=NOW, max_valid_until=MAX_VALID)
    assert report.added == [entity_id("a")]
    assert source.fetched_at == NOW
    path.unlink()
    with pytest.raises(SourceError, match=f"cannot read {path}"):
        refresh(dbsession, source, now=NOW, max_valid_until=MAX_VALID)


def _signed_source(dbsession, **values):
    from pathlib import Path

    from tests.aggregates import federation_keys

    pem = Path(federation_keys()[1]).read_text()
    return make_source(dbsession, unsigned_ok=False, anchor_pem=pem, **values)


def test_saml_28_a_signed_aggregate_under_its_anchor_loads(dbsession):
    """SAML-28: the root signature verifies under the source's certificate."""
    from tests.aggregates import federation_keys, make_aggregate

    source = _signed_source(dbsession)
    report = apply(dbsession, source, make_aggregate(3, signer=federation_keys()))
    assert len(report.added) == 3
    assert report.quarantined == {}


def test_saml_28_a_signed_aggregate_under_a_fingerprint_anchor_loads(dbsession):
    import hashlib
    import ssl
    from pathlib import Path

    from tests.aggregates import federation_keys, make_aggregate

    der = ssl.PEM_cert_to_DER_cert(Path(federation_keys()[1]).read_text())
    source = make_source(
        dbsession,
        unsigned_ok=False,
        anchor_fingerprint=hashlib.sha256(der).hexdigest(),
    )
    report = apply(dbsession, source, make_aggregate(2, signer=federation_keys()))
    assert len(report.added) == 2


@pytest.mark.parametrize("case", ["altered", "wrong_signer", "unsigned"])
def test_saml_28_a_bad_signature_refuses_the_whole_document(dbsession, case):
    """SAML-28: altered, signed by another key, or unsigned: nothing is used."""
    from tests.aggregates import federation_keys, make_aggregate

    source = _signed_source(dbsession)
    if case == "altered":
        document = make_aggregate(2, signer=federation_keys()).replace(
            b"sp1.example.edu.my/Shibboleth.sso/SAML2/POST",
            b"evil.example.org/Shibboleth.sso/SAML2/POST",
        )
    elif case == "wrong_signer":
        document = make_aggregate(2, signer=federation_keys("impostor"))
    else:
        document = make_aggregate(2)
    with pytest.raises(SourceError) as refused:
        apply(dbsession, source, document)
    assert "\n" not in str(refused.value)
    assert count(dbsession, ServiceProvider) == 0
    assert source.document_sha256 is None


def test_saml_28_a_signed_document_must_carry_valid_until(dbsession):
    from tests.aggregates import federation_keys, sign_metadata

    source = _signed_source(dbsession)
    root = etree.fromstring(aggregate(entity("a")))
    root.set("ID", "_doc")
    del root.attrib["validUntil"]
    document = sign_metadata(etree.tostring(root), federation_keys()[0])
    with pytest.raises(SourceError, match="no validUntil"):
        apply(dbsession, source, document)


def test_saml_28_an_entity_signed_by_another_key_is_quarantined(dbsession):
    """SAML-28: an entity's own signature must verify under the anchor too."""
    from tests.aggregates import (
        entity_element,
        federation_keys,
        make_aggregate,
        sign_metadata,
        sp_entity,
    )

    signed_entity = etree.fromstring(
        sign_metadata(
            etree.tostring(entity_element(sp_entity(1, id="_e1"))),
            federation_keys("impostor")[0],
        )
    )
    document = etree.fromstring(make_aggregate(1))
    document.append(signed_entity)
    aggregate_bytes = sign_metadata(etree.tostring(document), federation_keys()[0])

    report = apply(dbsession, _signed_source(dbsession), aggregate_bytes)

    assert report.added == ["https://sp0.example.edu.my/shibboleth"]
    reason = report.quarantined["https://sp1.example.edu.my/shibboleth"]
    assert reason.startswith("bad signature on the entity:")


def test_a_new_valid_until_alone_is_not_checked_again(dbsession, monkeypatch):
    """A federation re-signs daily with a later validUntil: the entities'
    copies take it without being parsed again, and stay unchanged."""
    import idp.saml.sources

    source = make_source(dbsession)
    apply(dbsession, source, aggregate(entity("a"), entity("b")))
    generation = registry.current_version(dbsession)[0]
    later = NOW + dt.timedelta(days=9)
    parsed = []
    real = idp.saml.sources.parse_sp_metadata
    monkeypatch.setattr(
        idp.saml.sources,
        "parse_sp_metadata",
        lambda data, **kw: parsed.append(data) or real(data, **kw),
    )

    report = apply(
        dbsession, source, aggregate(entity("a"), entity("b"), valid_until=later)
    )

    assert sorted(report.unchanged) == [entity_id("a"), entity_id("b")]
    assert report.updated == report.held == []
    assert parsed == []
    assert {sp.metadata_valid_until for sp in sps(dbsession).values()} == {later}
    assert registry.current_version(dbsession)[0] == generation + 1
    # A real change next to it is still checked and held.
    moved = with_endpoint(
        entity("a"), "AssertionConsumerService", "https://a.example.org/other"
    )
    report = apply(dbsession, source, aggregate(moved, entity("b"), valid_until=later))
    assert report.held == [entity_id("a")]
    assert len(parsed) == 1


@pytest.mark.postgresql
def test_a_failure_mid_way_leaves_nothing_applied(db_engine, monkeypatch):
    """One transaction per refresh: SPs already flushed go when it aborts."""
    from sqlalchemy.orm import Session

    flushed = []

    def failing_bump(session):
        flushed.append(count(session, ServiceProvider))
        raise RuntimeError("the database went away")

    monkeypatch.setattr(registry, "bump_generation", failing_bump)
    with (
        pytest.raises(RuntimeError),
        Session(db_engine) as session,
        session.begin(),
    ):
        source = make_source(session, "midway")
        apply(session, source, aggregate(entity("a"), entity("b")))
    assert flushed == [2]
    with Session(db_engine) as session:
        assert count(session, ServiceProvider) == 0
        assert count(session, AuditEvent) == 0
        assert session.scalar(select(func.count()).select_from(MetadataSource)) == 0


@pytest.mark.postgresql
def test_hostile_entity_ids_are_quarantined_escaped_and_short(dbsession):
    """A right-to-left override (XML refuses raw terminal escapes, not
    these) and a 4 KB entityID neither reach the operator's terminal as
    they are nor break the quarantine's index (the refresh goes on)."""
    source = make_source(dbsession)
    escape = entity("esc").replace(
        entity_id("esc").encode(), "https://esc.example.org/\u202esp".encode()
    )
    long_id = "https://long.example.org/" + "\u00e9" * 2000
    long = entity("long").replace(entity_id("long").encode(), long_id.encode())
    report = apply(dbsession, source, aggregate(escape, long, entity("ok")))
    assert report.added == [entity_id("ok")]
    keys = set(quarantine(dbsession, source))
    assert keys == set(report.quarantined)
    assert len(keys) == 2
    for key in keys:
        assert key.isprintable() and len(key) < 1024
    assert "https://esc.example.org/\\u202esp (27 characters)" in keys
    # Again: the same rows, not a second insert of the same key.
    report = apply(
        dbsession, source, aggregate(escape, long, entity("ok"), entity("b"))
    )
    assert set(quarantine(dbsession, source)) == keys


def test_a_host_claim_names_three_owners_at_most():
    claims = {"h.example.org": [f"https://e{i}.example.org/sp" for i in range(5)]}
    assert registry.describe_claims(claims) == (
        "h.example.org (used by https://e0.example.org/sp, "
        "https://e1.example.org/sp, https://e2.example.org/sp and 2 more)"
    )
