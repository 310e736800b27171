"""The Response policy functions of idp/saml/response.py, without the app.

Each decision is a plain function of plain values: the SPs and users here
are real model instances never attached to a session, the settings a dict.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from idp.models import ServiceProvider, User
from idp.saml.errors import SamlRefused
from idp.saml.requests import RequestedContext
from idp.saml.response import (
    AC_PASSWORD,
    AC_PASSWORD_PROTECTED,
    allowed_formats,
    authn_context,
    encryption_algorithm,
    personal_unique_id,
    security_image_context,
    supported_contexts,
)
from idp.saml.sp_metadata import parse_sp_metadata
from tests.saml_metadata import make_sp_metadata

SETTINGS = {"idp.base_url": "https://idp.test"}
AC_OURS = "https://idp.test/saml/ac/password-security-image"
AC_X509 = "urn:oasis:names:tc:SAML:2.0:ac:classes:X509"
AC_KERBEROS = "urn:oasis:names:tc:SAML:2.0:ac:classes:Kerberos"
RESPONDER = "urn:oasis:names:tc:SAML:2.0:status:Responder"
NO_AUTHN_CONTEXT = "urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext"

PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"

AES256_GCM = "http://www.w3.org/2009/xmlenc11#aes256-gcm"
AES128_GCM = "http://www.w3.org/2009/xmlenc11#aes128-gcm"
AES256_CBC = "http://www.w3.org/2001/04/xmlenc#aes256-cbc"
AES128_CBC = "http://www.w3.org/2001/04/xmlenc#aes128-cbc"
RSA_OAEP_MGF1P = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"

# Weakest first, as the IdP ranks what one sign-in proves.
RANK = {AC_PASSWORD: 0, AC_PASSWORD_PROTECTED: 1, AC_OURS: 2}


def sp(**policy) -> ServiceProvider:
    values = {
        "entity_id": "https://sp.example.org/sp",
        "name_id_format": PERSISTENT,
        "attributes_released": [],
        "required_authn_context": None,
    }
    values.update(policy)
    return ServiceProvider(**values)


def requested(comparison: str, *refs: str) -> RequestedContext:
    return RequestedContext(comparison, refs)


def refused(call) -> SamlRefused:
    with pytest.raises(SamlRefused) as caught:
        call()
    return caught.value


# --------------------------------------------------------------------------
# authn_context


def test_our_class_is_named_under_the_base_url():
    assert security_image_context(SETTINGS) == AC_OURS
    assert supported_contexts(SETTINGS) == (AC_PASSWORD, AC_PASSWORD_PROTECTED, AC_OURS)


@pytest.mark.parametrize("request_", [None, requested("exact"), requested("minimum")])
def test_nothing_requested_asserts_password_protected_transport(request_):
    assert authn_context(request_, sp(), SETTINGS) == AC_PASSWORD_PROTECTED


@pytest.mark.parametrize("ref", [AC_PASSWORD, AC_PASSWORD_PROTECTED, AC_OURS])
def test_exact_supported_class_is_asserted(ref):
    assert authn_context(requested("exact", ref), sp(), SETTINGS) == ref


def test_exact_takes_the_first_supported_class_named():
    request = requested("exact", AC_X509, AC_PASSWORD, AC_OURS)
    assert authn_context(request, sp(), SETTINGS) == AC_PASSWORD


@pytest.mark.parametrize(
    "request_",
    [
        requested("exact", AC_X509),
        requested("exact", AC_X509, AC_KERBEROS),
        requested("exact", "https://idp.test/saml/ac/other"),
        requested("exact", AC_OURS.upper()),
        requested("minimum", AC_X509),
        requested("better", AC_OURS),
        requested("sideways", AC_PASSWORD),
    ],
)
def test_unsatisfiable_request_is_no_authn_context(request_):
    error = refused(lambda: authn_context(request_, sp(), SETTINGS))
    assert error.code == "saml_no_authn_context"
    assert error.saml_status == (RESPONDER, NO_AUTHN_CONTEXT)
    assert 400 <= error.status < 500


@pytest.mark.parametrize("ref", [AC_PASSWORD, AC_PASSWORD_PROTECTED, AC_OURS])
def test_minimum_asserts_at_least_the_class(ref):
    got = authn_context(requested("minimum", ref), sp(), SETTINGS)
    assert RANK[got] >= RANK[ref]


def test_minimum_of_several_is_satisfied_by_the_weakest_named():
    got = authn_context(requested("minimum", AC_OURS, AC_PASSWORD), sp(), SETTINGS)
    assert got in RANK


@pytest.mark.parametrize("ref", [AC_PASSWORD, AC_PASSWORD_PROTECTED, AC_OURS])
def test_maximum_asserts_at_most_the_class(ref):
    got = authn_context(requested("maximum", ref), sp(), SETTINGS)
    assert RANK[got] <= RANK[ref]


@pytest.mark.parametrize("ref", [AC_PASSWORD, AC_PASSWORD_PROTECTED])
def test_better_asserts_a_stronger_class(ref):
    got = authn_context(requested("better", ref), sp(), SETTINGS)
    assert RANK[got] > RANK[ref]


def test_unknown_classes_are_ignored_in_comparisons_beside_known_ones():
    got = authn_context(requested("minimum", AC_X509, AC_OURS), sp(), SETTINGS)
    assert got == AC_OURS


def test_sp_required_context_is_asserted_and_limits_requests():
    strict = sp(required_authn_context=AC_OURS)
    assert authn_context(None, strict, SETTINGS) == AC_OURS
    assert authn_context(requested("exact", AC_OURS), strict, SETTINGS) == AC_OURS
    assert authn_context(requested("minimum", AC_PASSWORD), strict, SETTINGS) == AC_OURS
    error = refused(
        lambda: authn_context(
            requested("exact", AC_PASSWORD_PROTECTED), strict, SETTINGS
        )
    )
    assert error.saml_status == (RESPONDER, NO_AUTHN_CONTEXT)
    error = refused(
        lambda: authn_context(requested("maximum", AC_PASSWORD), strict, SETTINGS)
    )
    assert error.code == "saml_no_authn_context"


def test_a_stand_in_sp_is_enough():
    stand_in = SimpleNamespace(required_authn_context=None)
    assert (
        authn_context(requested("exact", AC_PASSWORD), stand_in, SETTINGS)
        == AC_PASSWORD
    )


# --------------------------------------------------------------------------
# allowed_formats


def test_persistent_and_transient_always_email_not_by_default():
    assert allowed_formats(sp()) == {PERSISTENT, TRANSIENT}
    assert allowed_formats(sp(attributes_released=["displayName", "uid"])) == {
        PERSISTENT,
        TRANSIENT,
    }


def test_email_format_when_mail_is_released():
    assert allowed_formats(sp(attributes_released=["displayName", "mail"])) == {
        PERSISTENT,
        TRANSIENT,
        EMAIL,
    }


def test_saml_33_email_policy_format_without_mail_is_not_allowed():
    """SAML-33: the policy's format alone does not release the address."""
    assert EMAIL not in allowed_formats(
        sp(name_id_format=EMAIL, attributes_released=["uid"])
    )
    assert EMAIL in allowed_formats(
        sp(name_id_format=EMAIL, attributes_released=["uid", "mail"])
    )
    assert EMAIL not in allowed_formats(
        sp(name_id_format=TRANSIENT, attributes_released=["uid"])
    )


def test_no_release_list_means_no_email():
    assert allowed_formats(sp(attributes_released=None)) == {PERSISTENT, TRANSIENT}


@pytest.mark.parametrize("near_miss", ["Mail", "email", "mail ", "mailbox"])
def test_only_the_exact_mail_name_allows_email(near_miss):
    assert EMAIL not in allowed_formats(sp(attributes_released=[near_miss]))


# --------------------------------------------------------------------------
# encryption_algorithm


def metadata_with(*methods: str):
    return parse_sp_metadata(
        make_sp_metadata(encryption=True, encryption_methods=methods)
    )


def test_gcm_when_the_sp_lists_no_methods():
    assert encryption_algorithm(metadata_with()) == AES256_GCM
    assert encryption_algorithm(SimpleNamespace(encryption_methods=())) == AES256_GCM


@pytest.mark.parametrize(
    "methods",
    [
        (AES256_GCM,),
        (AES128_CBC, AES256_GCM),
        (AES256_CBC, AES256_GCM, RSA_OAEP_MGF1P),
    ],
)
def test_gcm_when_the_sp_lists_it(methods):
    assert encryption_algorithm(metadata_with(*methods)) == AES256_GCM


@pytest.mark.parametrize(
    ("methods", "expected"),
    [
        ((AES128_CBC,), AES128_CBC),
        ((AES256_CBC,), AES256_CBC),
        ((AES128_CBC, AES256_CBC), AES256_CBC),
    ],
)
def test_cbc_when_the_sp_lists_methods_without_gcm(methods, expected):
    """An SP that lists only CBC may not read GCM: the strongest CBC it lists."""
    assert encryption_algorithm(metadata_with(*methods)) == expected


def test_a_128_bit_key_only_when_the_sp_lists_no_256_bit_mode():
    for methods in [(), (AES128_CBC, AES256_CBC), (AES128_GCM, AES256_GCM)]:
        got = encryption_algorithm(SimpleNamespace(encryption_methods=methods))
        assert got in (AES256_GCM, AES256_CBC)
    # AES-128-GCM outranks AES-256-CBC (authenticated beats unauthenticated).
    assert (
        encryption_algorithm(
            SimpleNamespace(encryption_methods=(AES256_CBC, AES128_GCM))
        )
        == AES128_GCM
    )


def test_policy_override_wins_over_the_metadata():
    metadata = SimpleNamespace(encryption_methods=(AES256_GCM,))
    assert encryption_algorithm(metadata, "aes128-cbc") == AES128_CBC
    assert encryption_algorithm(metadata, None) == AES256_GCM


# --------------------------------------------------------------------------
# personal_unique_id


def test_mykad_is_a_malaysian_nic():
    user = User(identifier_kind="mykad", identifier="080512145601")
    assert personal_unique_id(user) == "urn:schac:personalUniqueID:my:NIC:080512145601"


@pytest.mark.parametrize(
    ("identifier", "country", "number"),
    [
        ("GBR:123456789", "gb", "123456789"),
        ("MYS:A12345678", "my", "A12345678"),
        ("IDN:B1234567", "id", "B1234567"),
    ],
)
def test_passport_names_its_country_by_the_schac_two_letter_code(
    identifier, country, number
):
    """SCHAC 1.6: <country> is a two-letter ISO 3166 code (lowercase) or "int"."""
    user = User(identifier_kind="passport", identifier=identifier)
    parts = personal_unique_id(user).split(":")
    assert parts[:3] == ["urn", "schac", "personalUniqueID"]
    assert len(parts) == 6, parts
    assert parts[3] == country
    assert parts[4]
    assert parts[5] == number


def test_two_people_never_share_a_value():
    values = {
        personal_unique_id(User(identifier_kind="mykad", identifier="080512145601")),
        personal_unique_id(User(identifier_kind="mykad", identifier="080512145602")),
        personal_unique_id(
            User(identifier_kind="passport", identifier="GBR:080512145601")
        ),
    }
    assert len(values) == 3
