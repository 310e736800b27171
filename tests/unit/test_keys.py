"""The IdP's key pairs on disk."""

from __future__ import annotations

import os
import stat

import pytest

from idp.saml import keys


@pytest.fixture
def loose_umask():
    previous = os.umask(0)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_05_private_key_is_0600_whatever_the_umask(tmp_path, loose_umask):
    """DATA-05: with umask 000 the private key is still written mode 0600."""
    pair = keys.generate(tmp_path, "idp.test", key_size=2048)
    assert mode(pair.key_file) == 0o600
    assert keys.load(tmp_path) == pair


def test_data_05_group_or_world_readable_key_is_refused(tmp_path):
    """DATA-05: a key file with mode 0644 is refused at load; 0600 loads."""
    pair = keys.generate(tmp_path, "idp.test", key_size=2048)
    pair.key_file.chmod(0o644)
    with pytest.raises(keys.KeyPairError, match="readable by others"):
        keys.load(tmp_path)
    pair.key_file.chmod(0o600)
    keys.load(tmp_path)


def test_generated_pair_is_rsa_3072_by_default_and_self_signed(tmp_path):
    pair = keys.generate(tmp_path, "idp.test")
    cert = pair.certificate
    assert cert.public_key().key_size == 3072
    assert cert.issuer == cert.subject
    assert len(pair.fingerprint) == 64


def test_existing_pair_is_not_replaced_without_force(tmp_path):
    first = keys.generate(tmp_path, "idp.test", key_size=2048)
    fingerprint = first.fingerprint
    with pytest.raises(keys.KeyPairError, match="already exists"):
        keys.generate(tmp_path, "idp.test", key_size=2048)
    assert keys.load(tmp_path).fingerprint == fingerprint
    replaced = keys.generate(tmp_path, "idp.test", key_size=2048, overwrite=True)
    assert replaced.fingerprint != fingerprint


def test_mismatched_certificate_is_refused(tmp_path):
    keys.generate(tmp_path / "a", "idp.test", key_size=2048)
    other = keys.generate(tmp_path / "b", "idp.test", key_size=2048)
    (tmp_path / "a" / keys.SIGNING_CERT).write_bytes(other.cert_file.read_bytes())
    with pytest.raises(keys.KeyPairError, match="does not match"):
        keys.load(tmp_path / "a")


def test_missing_or_garbage_key_is_a_clear_error(tmp_path):
    with pytest.raises(keys.KeyPairError, match="is missing"):
        keys.load(tmp_path)
    pair = keys.generate(tmp_path, "idp.test", key_size=2048)
    pair.key_file.write_text("not a key")
    with pytest.raises(keys.KeyPairError, match="not a valid PEM"):
        keys.load(tmp_path)


def test_ensure_creates_once(tmp_path):
    first = keys.ensure(tmp_path, "idp.test", key_size=2048)
    again = keys.ensure(tmp_path, "idp.test", key_size=2048)
    assert first.fingerprint == again.fingerprint
