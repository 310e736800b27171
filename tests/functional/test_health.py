"""``/healthz`` as a load balancer probes it: by address, and told why it fails."""

from __future__ import annotations

import pytest

from idp.saml import keys as keystore

PROBE_HOST = "10.0.0.5"


@pytest.mark.parametrize("host", [PROBE_HOST, "10.0.0.5:6543", "[2001:db8::5]:8080"])
def test_healthz_answers_a_probe_by_address(testapp, host):
    response = testapp.get("/healthz", extra_environ={"HTTP_HOST": host})
    assert response.status_int == 200
    assert response.json == {"status": "ok", "database": "ok", "keys": "ok"}


@pytest.mark.parametrize(
    "path", ["/login", "/", "/healthz/", "/healthz/x", "/saml/metadata"]
)
@pytest.mark.parametrize("locale", ["ms", "en"])
def test_allowed_hosts_still_guards_every_other_page(testapp, path, locale):
    """Only the exact health route skips the Host check; the rest get the 400 page."""
    response = testapp.get(
        f"{path}?lang={locale}", extra_environ={"HTTP_HOST": PROBE_HOST}, status=400
    )
    assert 'data-error-code="bad_request"' in response.text
    assert f'<html lang="{locale}">' in response.text
    assert "idp_session=" not in response.headers.get("Set-Cookie", "")


def test_healthz_control_on_the_named_host(testapp):
    assert testapp.get("/healthz").json["status"] == "ok"


def test_healthz_503_says_why_without_paths(testapp, keypair):
    mode = keypair.key_file.stat().st_mode
    keypair.key_file.chmod(0o644)
    try:
        response = testapp.get(
            "/healthz", extra_environ={"HTTP_HOST": PROBE_HOST}, status=503
        )
    finally:
        keypair.key_file.chmod(mode)
    body = response.json
    assert body["status"] == "unavailable"
    assert body["database"] == "ok"
    assert body["keys"] == "unavailable"
    assert body["reasons"] == {"keys": "the signing key is readable by other users"}
    assert str(keypair.key_file.parent) not in response.text
    assert "/" not in "".join(body["reasons"].values())


def test_healthz_503_when_the_key_is_missing(testapp, keypair):
    moved = keypair.key_file.with_suffix(".moved")
    keypair.key_file.rename(moved)
    try:
        response = testapp.get("/healthz", status=503)
    finally:
        moved.rename(keypair.key_file)
    assert response.json["reasons"] == {
        "keys": "the signing key or certificate is missing"
    }
    assert str(keypair.key_file.parent) not in response.text


def test_healthz_probes_do_not_read_the_key_again(testapp, keypair, monkeypatch):
    """100 probes load no private key and open no key file: probes are cheap.

    Loading and validating an RSA key is the dearest thing a probe could
    do (about 140 ms for RSA-3072 here, against 15 ms for a page); the key
    ring checks a file again only when its inode, size, time or mode change.
    """
    from cryptography.hazmat.primitives import serialization

    testapp.get("/healthz")  # whatever this process had not checked yet
    loads, reads = [], []
    real_load = serialization.load_pem_private_key
    real_read = type(keypair.key_file).read_bytes

    def counting_load(*args, **kwargs):
        loads.append(1)
        return real_load(*args, **kwargs)

    def counting_read(path):
        if path.suffix == ".key":
            reads.append(path)
        return real_read(path)

    monkeypatch.setattr(serialization, "load_pem_private_key", counting_load)
    monkeypatch.setattr(type(keypair.key_file), "read_bytes", counting_read)
    for _ in range(100):
        assert testapp.get("/healthz").json["status"] == "ok"
    assert loads == [] and reads == []

    # A changed key file is noticed at the next probe, and so is its repair.
    original = keypair.key_file.read_bytes()
    other = keystore.make_pem_pair("other.test", key_size=2048)[0]
    try:
        keypair.key_file.write_bytes(other)
        body = testapp.get("/healthz", status=503).json
        assert body["reasons"] == {
            "keys": "the certificate does not match the signing key"
        }
        keypair.key_file.write_bytes(b"not a key")
        body = testapp.get("/healthz", status=503).json
        assert body["reasons"] == {
            "keys": "the signing key or certificate is not valid PEM"
        }
    finally:
        keypair.key_file.write_bytes(original)
    assert testapp.get("/healthz").json["status"] == "ok"
    assert len(loads) == 3  # the wrong key, the broken one, the repaired one
