"""The TOTP algorithm against the RFCs' own vectors, secrets sealed, codes read."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from idp.services.two_factor import (
    RECOVERY_ALPHABET,
    SecretBox,
    hotp,
    provisioning_uri,
    read_code,
    read_recovery_code,
    show_recovery_code,
    step_of,
)

# RFC 4226 appendix D: HOTP of counters 0 to 9 under this key.
RFC4226_KEY = b"12345678901234567890"
RFC4226 = [
    "755224",
    "287082",
    "359152",
    "969429",
    "338314",
    "254676",
    "287922",
    "162583",
    "399871",
    "520489",
]
# RFC 6238 appendix B: 8-digit TOTP at these Unix times, per hash and its key.
RFC6238_KEYS = {
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890" * 6 + b"1234",
}
RFC6238 = [
    (59, {"sha1": "94287082", "sha256": "46119246", "sha512": "90693936"}),
    (1111111109, {"sha1": "07081804", "sha256": "68084774", "sha512": "25091201"}),
    (1111111111, {"sha1": "14050471", "sha256": "67062674", "sha512": "99943326"}),
    (1234567890, {"sha1": "89005924", "sha256": "91819424", "sha512": "93441116"}),
    (2000000000, {"sha1": "69279037", "sha256": "90698825", "sha512": "38618901"}),
    (20000000000, {"sha1": "65353130", "sha256": "77737706", "sha512": "47863826"}),
]


@pytest.mark.parametrize(("counter", "expected"), list(enumerate(RFC4226)))
def test_hotp_matches_rfc_4226(counter, expected):
    assert hotp(RFC4226_KEY, counter) == expected


@pytest.mark.parametrize(("unix", "expected"), RFC6238)
@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
def test_totp_matches_rfc_6238(unix, expected, algorithm):
    moment = dt.datetime.fromtimestamp(unix, dt.UTC)
    key = RFC6238_KEYS[algorithm]
    assert (
        hotp(key, step_of(moment), digits=8, algorithm=algorithm)
        == (expected[algorithm])
    )


def test_steps_are_30_seconds_from_the_epoch():
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert step_of(epoch + dt.timedelta(seconds=29)) == 0
    assert step_of(epoch + dt.timedelta(seconds=30)) == 1


def test_a_sealed_secret_opens_only_for_its_user_and_key():
    box = SecretBox("k" * 32)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    sealed = box.seal(alice, b"s" * 20)
    assert b"s" * 20 not in sealed.encode()
    assert box.open(alice, sealed) == b"s" * 20
    # Copied to another user's row, or read under another hmac_key: nothing.
    assert box.open(bob, sealed) is None
    assert SecretBox("x" * 32).open(alice, sealed) is None
    # Tampered, truncated or of an unknown version: nothing, never an error.
    version, _, payload = sealed.partition(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    for bad in (f"{version}.{flipped}", sealed[:20], "v9." + payload, "", "v1.!!"):
        assert box.open(alice, bad) is None
    # Two seals of one secret differ (a fresh nonce each).
    assert box.seal(alice, b"s" * 20) != sealed


@pytest.mark.parametrize(
    ("typed", "read"),
    [
        ("123456", "123456"),
        ("123 456", "123456"),
        (" 123-456 ", "123456"),
        ("12345", None),
        ("1234567", None),
        ("12345a", None),
        ("١٢٣٤٥٦", None),  # Arabic-Indic digits: isdigit(), but not ASCII
        ("", None),
        (None, None),
    ],
)
def test_reading_an_authenticator_code(typed, read):
    assert read_code(typed) == read


def test_reading_a_recovery_code_forgives_case_dashes_and_lookalikes():
    code = "7k3mq9xd2hfp"
    assert read_recovery_code(show_recovery_code(code)) == code
    assert read_recovery_code("7K3M Q9XD 2HFP") == code
    # o for 0, i and l for 1 (Crockford's base32 has neither).
    assert read_recovery_code("oilo-0000-0000") == "0110" + "0" * 8
    assert read_recovery_code("7k3m-q9xd-2hf") is None
    assert read_recovery_code("7k3m-q9xd-2hfu") is None  # u is not in it
    assert read_recovery_code("ｋ" * 12) is None
    assert set(RECOVERY_ALPHABET) <= set("0123456789abcdefghijklmnopqrstuvwxyz")
    assert len(RECOVERY_ALPHABET) == 32


def test_the_provisioning_uri_is_what_authenticator_apps_read():
    uri = provisioning_uri("JBSWY3DPEHPK3PXP", "ali@example.com.my")
    assert uri == (
        "otpauth://totp/idMe:ali@example.com.my?secret=JBSWY3DPEHPK3PXP"
        "&issuer=idMe&algorithm=SHA1&digits=6&period=30"
    )
