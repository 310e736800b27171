"""SAML-35: assertions are encrypted with what the SP's metadata says it reads."""

from __future__ import annotations

import pytest

from idp.saml.registry import set_policy
from idp.saml.sp_metadata import MetadataError
from tests.functional.test_sso_responses import (
    ASSERTION_NODE,
    NS,
    RESPONSE_NODE,
    XENC,
    add_sp,
    assertion_doc,
    parse,
    saml_xml,
    sso,
    verify,
)
from tests.saml_metadata import (
    AES128_CBC,
    AES128_GCM,
    AES256_CBC,
    AES256_GCM,
    RSA_OAEP_11,
    RSA_OAEP_MGF1P,
    SHA1,
    SHA256,
    SHA512,
    SP_ENTITY_ID,
    TRIPLEDES,
    make_sp_metadata,
    with_encryption_methods,
)
from tests.signin import sign_in


def metadata(*methods: tuple[str, str | None]) -> bytes:
    """The SP's metadata with an encryption key listing ``methods`` (alg, digest)."""
    return with_encryption_methods(make_sp_metadata(encryption=True), methods)


def encrypted(testapp, dbsession, user, data: bytes):
    add_sp(dbsession, metadata=data)
    sign_in(testapp, user)
    xml = saml_xml(sso(testapp, status=200))
    root = parse(xml)
    data_node = root.find("saml:EncryptedAssertion/xenc:EncryptedData", NS)
    [key] = root.iter(f"{{{XENC}}}EncryptedKey")
    method = key.find("xenc:EncryptionMethod", NS)
    digest = method.find("ds:DigestMethod", NS)
    return xml, (
        data_node.find("xenc:EncryptionMethod", NS).get("Algorithm"),
        method.get("Algorithm"),
        digest.get("Algorithm") if digest is not None else None,
    )


CASES = [
    # (what the SP lists, data algorithm, key transport, digest)
    ((), AES256_GCM, RSA_OAEP_MGF1P, SHA256),
    (((AES128_CBC, None),), AES128_CBC, RSA_OAEP_MGF1P, SHA256),
    (((AES128_CBC, None), (AES256_CBC, None)), AES256_CBC, RSA_OAEP_MGF1P, SHA256),
    (((AES128_CBC, None), (AES128_GCM, None)), AES128_GCM, RSA_OAEP_MGF1P, SHA256),
    (
        ((AES128_GCM, None), (AES256_CBC, None), (AES256_GCM, None)),
        AES256_GCM,
        RSA_OAEP_MGF1P,
        SHA256,
    ),
    (((TRIPLEDES, None),), AES256_GCM, RSA_OAEP_MGF1P, SHA256),
    (((AES256_CBC, None), (RSA_OAEP_MGF1P, SHA1)), AES256_CBC, RSA_OAEP_MGF1P, SHA1),
    (
        ((AES128_GCM, None), (RSA_OAEP_MGF1P, SHA512)),
        AES128_GCM,
        RSA_OAEP_MGF1P,
        SHA512,
    ),
    (((RSA_OAEP_11, SHA256),), AES256_GCM, RSA_OAEP_11, SHA256),
]


@pytest.mark.parametrize(("listed", "data_alg", "transport", "digest"), CASES)
def test_saml_35_encryption_follows_the_sp_metadata(
    testapp, dbsession, module, user, keypair, listed, data_alg, transport, digest
):
    """SAML-35: the strongest listed AES mode, RSA-OAEP with the listed digest."""
    xml, chosen = encrypted(testapp, dbsession, user, metadata(*listed))
    assert chosen == (data_alg, transport, digest)
    # It decrypts (with the SP's key) to the signed assertion.
    assert verify(keypair, xml, RESPONSE_NODE, parse(xml).get("ID"))
    plain, assertion = assertion_doc(xml)
    assert verify(keypair, plain, ASSERTION_NODE, assertion.get("ID"))
    assert assertion.find(".//saml:Audience", NS).text == SP_ENTITY_ID


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("aes128-cbc", AES128_CBC),
        ("aes256-cbc", AES256_CBC),
        ("aes128-gcm", AES128_GCM),
        ("aes256-gcm", AES256_GCM),
    ],
)
def test_saml_35_policy_override_for_legacy_sps(
    testapp, dbsession, module, user, keypair, override, expected
):
    """SAML-35: ``sp policy --encryption-method`` wins over the metadata."""
    add_sp(dbsession, metadata=metadata((AES256_GCM, None)))
    set_policy(dbsession, SP_ENTITY_ID, encryption_method=override)
    sign_in(testapp, user)
    xml = saml_xml(sso(testapp, status=200))
    data_node = parse(xml).find("saml:EncryptedAssertion/xenc:EncryptedData", NS)
    assert data_node.find("xenc:EncryptionMethod", NS).get("Algorithm") == expected
    plain, assertion = assertion_doc(xml)
    assert verify(keypair, plain, ASSERTION_NODE, assertion.get("ID"))
    # Back to the metadata's choice.
    set_policy(dbsession, SP_ENTITY_ID, encryption_method=None)
    xml = saml_xml(sso(testapp, status=200))
    data_node = parse(xml).find("saml:EncryptedAssertion/xenc:EncryptedData", NS)
    assert data_node.find("xenc:EncryptionMethod", NS).get("Algorithm") == AES256_GCM


@pytest.mark.parametrize("bad", ["des", "aes192-gcm", "AES256-GCM", ""])
def test_unknown_encryption_method_is_refused(dbsession, module, bad):
    sp = add_sp(dbsession, metadata=metadata())
    with pytest.raises(MetadataError, match="encryption method must be one of"):
        set_policy(dbsession, SP_ENTITY_ID, encryption_method=bad)
    assert sp.encryption_method is None


def test_cli_sets_and_shows_the_encryption_method(tmp_path):
    """``sp policy --encryption-method`` as an operator runs it, and 'auto' undoes it."""
    from tests.cli import admin, scratch_ini

    config = scratch_ini(tmp_path)
    assert admin(config, "db", "upgrade").returncode == 0
    data = tmp_path / "sp.xml"
    data.write_bytes(metadata((AES256_GCM, None)))
    assert admin(config, "sp", "import", data).returncode == 0
    shown = admin(config, "sp", "show", SP_ENTITY_ID).stdout
    assert "encryption method:    auto" in shown
    result = admin(
        config, "sp", "policy", SP_ENTITY_ID, "--encryption-method", "aes128-cbc"
    )
    assert result.returncode == 0, result.stderr
    assert (
        "encryption method:    aes128-cbc"
        in admin(config, "sp", "show", SP_ENTITY_ID).stdout
    )
    refused = admin(config, "sp", "policy", SP_ENTITY_ID, "--encryption-method", "des")
    assert refused.returncode != 0
    assert "invalid choice: 'des'" in refused.stderr
    assert "Traceback" not in refused.stderr
    result = admin(config, "sp", "policy", SP_ENTITY_ID, "--encryption-method", "auto")
    assert result.returncode == 0, result.stderr
    assert (
        "encryption method:    auto" in admin(config, "sp", "show", SP_ENTITY_ID).stdout
    )
