"""``/healthz`` as a load balancer probes it: by address, and told why it fails."""

from __future__ import annotations

import pytest

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
