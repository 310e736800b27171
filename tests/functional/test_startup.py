"""What the IdP checks before it serves anything."""

from __future__ import annotations

import pytest

import idp
import idp.config as idp_config
from idp.saml.crypto import XmlsecBackend


def test_ops_07_accept_all_verifier_stops_start(settings, monkeypatch, capsys):
    """OPS-07: a verifier that passes a tampered document keeps the IdP from starting."""
    # Control: the real verifier starts.
    assert idp.main({}, **settings) is not None
    monkeypatch.setattr(XmlsecBackend, "validate_signature", lambda self, *a, **k: True)
    with pytest.raises(SystemExit) as info:
        idp.main({}, **settings)
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("idp: cannot start:")
    assert error.count("\n") == 1


def test_start_up_ends_by_collecting_then_freezing_what_it_built(settings, monkeypatch):
    """gc.freeze() once the app exists, after a collection; not on a failed start."""
    import gc
    import types

    calls: list[str] = []
    built: list[object] = []
    real_configure = idp_config.configure

    def configure(values):
        built.append("app")
        return real_configure(values)

    fake = types.SimpleNamespace(
        collect=lambda: calls.append(f"collect after {built}"),
        freeze=lambda: calls.append(f"freeze after {built}"),
    )
    monkeypatch.setattr(idp, "gc", fake)
    monkeypatch.setattr(idp_config, "configure", configure)
    assert idp.main({}, **settings) is not None
    assert calls == ["collect after ['app']", "freeze after ['app']"]
    calls.clear()
    with pytest.raises(SystemExit):
        idp.main({}, **{**settings, "idp.key_size": "nonsense"})
    assert calls == []
    # For real: the registry built at start-up is in the permanent generation.
    monkeypatch.undo()
    app = idp.main({}, **settings)
    assert gc.get_freeze_count() > 0
    assert not any(o is app.registry for o in gc.get_objects(generation=2))


def test_missing_keys_stop_start_with_one_line(settings, tmp_path, capsys):
    with pytest.raises(SystemExit):
        idp.main({}, **{**settings, "idp.certs_dir": str(tmp_path / "none")})
    error = capsys.readouterr().err
    assert "signing.key is missing" in error
    assert error.count("\n") == 1


def test_development_creates_keys_on_first_start(settings, tmp_path):
    certs = tmp_path / "certs"
    idp.main(
        {}, **{**settings, "idp.certs_dir": str(certs), "idp.auto_create_keys": "true"}
    )
    assert (certs / "signing.key").stat().st_mode & 0o777 == 0o600
    assert (certs / "signing.crt").is_file()


def test_production_with_development_secret_stops_start(settings, capsys):
    """DATA-06: the app itself refuses development secrets in production."""
    production = {
        **settings,
        "idp.environment": "production",
        "idp.base_url": "https://idp.test",
    }
    with pytest.raises(SystemExit):
        idp.main({}, **production)
    error = capsys.readouterr().err
    assert "idp.session_secret: the development value" in error


def test_a_misspelt_setting_stops_start_with_one_line(settings, capsys):
    """Issue 12: ``mail.hots`` must not leave mail.host at its default unnoticed."""
    with pytest.raises(SystemExit) as info:
        idp.main({}, **{**settings, "mail.hots": "smtp.example.org"})
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "idp: cannot start: unknown setting mail.hots (did you mean mail.host?)\n"
    )
    # The control: spelt right, it starts.
    assert idp.main({}, **{**settings, "mail.host": "smtp.example.org"}) is not None
