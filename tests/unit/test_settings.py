"""Typed settings: defaults, bounds, and production's refusal of weak secrets."""

from __future__ import annotations

import pytest

from idp.settings import SettingsError, parse_settings

STRONG = "x" * 48


def raw(**overrides) -> dict:
    base = {
        "idp.environment": "production",
        "idp.base_url": "https://idme.example.gov.my",
        "idp.session_secret": STRONG,
        "idp.hmac_key": STRONG + "y",
        "sqlalchemy.url": "postgresql+psycopg://idp@db/idp",
        "mail.sender": "idMe <no-reply@idme.example.gov.my>",
    }
    base.update(overrides)
    return base


def test_typed_values_and_defaults():
    settings = parse_settings(raw(**{"idp.bcrypt_rounds": "13"}), environ={})
    assert settings["idp.bcrypt_rounds"] == 13
    assert settings["idp.clock_skew"] == 180
    assert settings["captcha.enabled"] is True
    assert settings["idp.entity_id"] == "https://idme.example.gov.my/saml/metadata"
    assert settings["idp.development"] is False


def test_unknown_settings_pass_through():
    settings = parse_settings(raw(**{"jinja2.filters": "x"}), environ={})
    assert settings["jinja2.filters"] == "x"


@pytest.mark.parametrize(
    ("value", "ok"), [("-1", False), ("0", True), ("600", True), ("601", False)]
)
def test_ops_02_clock_skew_outside_0_to_600_stops_start(value, ok):
    """OPS-02: idp.clock_skew must be 0-600 seconds, or the IdP does not start."""
    if ok:
        assert parse_settings(raw(**{"idp.clock_skew": value}), environ={})[
            "idp.clock_skew"
        ] == int(value)
    else:
        with pytest.raises(
            SettingsError, match=r"^idp\.clock_skew: must be between 0 and 600"
        ):
            parse_settings(raw(**{"idp.clock_skew": value}), environ={})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("idp.bcrypt_rounds", "twelve", "idp.bcrypt_rounds"),
        ("idp.bcrypt_rounds", "3", "idp.bcrypt_rounds: must be between 4 and 16"),
        ("captcha.enabled", "maybe", "captcha.enabled: must be true or false"),
        ("idp.environment", "staging", "idp.environment: must be one of"),
        ("idp.base_url", "idme.example", "idp.base_url: must be an http"),
    ],
)
def test_bad_values_name_the_setting(name, value, message):
    with pytest.raises(SettingsError) as info:
        parse_settings(raw(**{name: value}), environ={})
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_base_url_is_required():
    settings = raw()
    del settings["idp.base_url"]
    with pytest.raises(
        SettingsError, match=r"^idp\.base_url: this setting is required"
    ):
        parse_settings(settings, environ={})


@pytest.mark.parametrize("name", ["idp.session_secret", "idp.hmac_key"])
def test_data_06_production_refuses_missing_secrets(name):
    """DATA-06: production without a secret does not start, and says which."""
    with pytest.raises(SettingsError, match=rf"^{name}: required in production"):
        parse_settings(raw(**{name: ""}), environ={})


@pytest.mark.parametrize("name", ["idp.session_secret", "idp.hmac_key"])
def test_data_06_production_refuses_development_secrets(name):
    """DATA-06: the shipped development secrets are refused in production."""
    with pytest.raises(SettingsError, match=rf"^{name}: the development value"):
        parse_settings(
            raw(**{name: "development-only-session-secret-0123456789abcdef"}),
            environ={},
        )
    # Control: the same length of real secret is accepted.
    parse_settings(raw(**{name: "z" * 48}), environ={})


@pytest.mark.parametrize("name", ["idp.session_secret", "idp.hmac_key"])
def test_data_06_production_refuses_short_secrets(name):
    """DATA-06: secrets under 32 bytes are refused in production; 32 are accepted."""
    with pytest.raises(SettingsError, match=rf"^{name}: must be at least 32 bytes"):
        parse_settings(raw(**{name: "s" * 31}), environ={})
    parse_settings(raw(**{name: "s" * 32}), environ={})


def test_data_06_secrets_come_from_the_environment():
    """DATA-06: production.ini ships no secret; the environment supplies them."""
    settings = parse_settings(
        raw(**{"idp.session_secret": "", "idp.hmac_key": ""}),
        environ={
            "IDP_SESSION_SECRET": "e" * 40,
            "IDP_HMAC_KEY": "h" * 40,
            "IDP_DATABASE_URL": "postgresql+psycopg://u:p@db/x",
        },
    )
    assert settings["idp.session_secret"] == "e" * 40
    assert settings["idp.hmac_key"] == "h" * 40
    assert settings["sqlalchemy.url"] == "postgresql+psycopg://u:p@db/x"


def test_production_refuses_auto_created_keys_and_plain_http():
    with pytest.raises(SettingsError, match=r"^idp\.auto_create_keys"):
        parse_settings(raw(**{"idp.auto_create_keys": "true"}), environ={})
    with pytest.raises(SettingsError, match=r"^idp\.base_url: must be an https"):
        parse_settings(raw(**{"idp.base_url": "http://idme.example"}), environ={})


def test_development_accepts_its_own_secrets():
    settings = parse_settings(
        raw(
            **{
                "idp.environment": "development",
                "idp.base_url": "http://127.0.0.1:6543",
                "idp.session_secret": "development-only-a",
                "idp.hmac_key": "development-only-b",
                "idp.auto_create_keys": "true",
            }
        ),
        environ={},
    )
    assert settings["idp.development"] is True


def test_shipped_production_ini_refuses_to_start_without_environment():
    """production.ini as shipped cannot start: its secrets must come from the environment."""
    from pathlib import Path

    from pyramid.paster import get_appsettings

    ini = Path(__file__).resolve().parents[2] / "production.ini"
    with pytest.raises(
        SettingsError, match=r"^idp\.session_secret: required in production"
    ):
        parse_settings(dict(get_appsettings(str(ini), name="main")), environ={})


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("idMe <no-reply@idme.example.gov.my>", True),
        ("no-reply@idme.example.gov.my", True),
        ("", False),
        ("no-reply", False),
        ("a@localhost", False),
        ("x@y.my\r\nBcc: victim@example.com", False),
    ],
)
def test_mail_sender_must_be_an_address(value, ok):
    if ok:
        assert parse_settings(raw(**{"mail.sender": value}), environ={})
    else:
        with pytest.raises(SettingsError, match=r"^mail\.sender: "):
            parse_settings(raw(**{"mail.sender": value}), environ={})


def test_smtp_credentials_need_encryption():
    mail = {"mail.username": "idme", "mail.security": "none"}
    with pytest.raises(SettingsError, match=r"^mail\.security: "):
        parse_settings(raw(**mail), environ={})
    assert parse_settings(raw(**{**mail, "mail.security": "starttls"}), environ={})


def test_timezone_is_checked():
    assert parse_settings(raw(), environ={})["idp.timezone"] == "Asia/Kuala_Lumpur"
    with pytest.raises(SettingsError, match=r"^idp\.timezone: "):
        parse_settings(raw(**{"idp.timezone": "Mars/Olympus"}), environ={})


def test_a_hosted_captcha_needs_its_keys():
    hosted = {"captcha.backend": "turnstile"}
    with pytest.raises(SettingsError, match=r"^captcha\.site_key: "):
        parse_settings(raw(**hosted), environ={})
    with pytest.raises(SettingsError, match=r"^captcha\.secret: .*IDP_CAPTCHA_SECRET"):
        parse_settings(raw(**hosted, **{"captcha.site_key": "k"}), environ={})
    settings = parse_settings(
        raw(**hosted, **{"captcha.site_key": "k"}),
        environ={"IDP_CAPTCHA_SECRET": "s"},
    )
    assert settings["captcha.secret"] == "s"
    with pytest.raises(SettingsError, match=r"^captcha\.verify_url: "):
        parse_settings(
            raw(
                **hosted, **{"captcha.site_key": "k", "captcha.verify_url": "http://x"}
            ),
            environ={"IDP_CAPTCHA_SECRET": "s"},
        )


HOOK = {"IDP_E2E_CAPTCHA_HOOK": "1"}


def _shipped(ini: str, **overrides) -> dict:
    from pathlib import Path

    from pyramid.paster import get_appsettings

    path = Path(__file__).resolve().parents[2] / ini
    return {**get_appsettings(str(path), name="main"), **overrides}


def test_production_ini_refuses_the_captcha_test_hook_even_with_its_variable():
    """production.ini with the browser tests' captcha hook set does not start,
    even when the test runner's variable is in the environment."""
    environ = {**HOOK, "IDP_SESSION_SECRET": "e" * 40, "IDP_HMAC_KEY": "h" * 40}
    settings = _shipped("production.ini")
    assert parse_settings(settings, environ=environ)["captcha.test_answers_dir"] == ""
    with pytest.raises(
        SettingsError, match=r"^captcha\.test_answers_dir: .*production"
    ):
        parse_settings(
            {**settings, "captcha.test_answers_dir": "var/e2e-answers"}, environ=environ
        )


def test_development_refuses_the_captcha_test_hook_without_the_runner():
    """Development takes the hook only when the browser-test runner set its
    variable; with it (the control) the directory is accepted."""
    settings = _shipped(
        "development.ini", **{"captcha.test_answers_dir": "var/e2e-answers"}
    )
    with pytest.raises(SettingsError, match=r"IDP_E2E_CAPTCHA_HOOK=1"):
        parse_settings(settings, environ={})
    with pytest.raises(SettingsError, match=r"IDP_E2E_CAPTCHA_HOOK=1"):
        parse_settings(settings, environ={"IDP_E2E_CAPTCHA_HOOK": "yes"})
    assert (
        parse_settings(settings, environ=HOOK)["captcha.test_answers_dir"]
        == "var/e2e-answers"
    )


def test_misspelt_settings_stop_start_with_one_line_naming_them():
    """Issue 12: a typo must not leave a default silently in force."""
    with pytest.raises(SettingsError) as info:
        parse_settings(
            raw(**{"mail.hots": "smtp.example.org", "idp.bcrypt_round": "13"}),
            environ={},
        )
    assert str(info.value) == (
        "unknown setting idp.bcrypt_round (did you mean idp.bcrypt_rounds?); "
        "unknown setting mail.hots (did you mean mail.host?)"
    )
    with pytest.raises(SettingsError, match=r"^unknown setting captcha\.frobnicate$"):
        parse_settings(raw(**{"captcha.frobnicate": "1"}), environ={})
    with pytest.raises(
        SettingsError,
        match=r"^unknown setting ratelimit\.login\.adress "
        r"\(did you mean ratelimit\.login\.address\?\)$",
    ):
        parse_settings(raw(**{"ratelimit.login.adress": "5/60"}), environ={})
    parse_settings(raw(**{"ratelimit.login.address": "5/60"}), environ={})
    # The control: the names spelt right are read.
    settings = parse_settings(
        raw(**{"mail.host": "smtp.example.org", "idp.bcrypt_rounds": "13"}),
        environ={},
    )
    assert (settings["mail.host"], settings["idp.bcrypt_rounds"]) == (
        "smtp.example.org",
        13,
    )


def test_other_prefixes_are_not_ours_to_refuse():
    settings = parse_settings(
        raw(**{"sqlalchemy.pool_size": "5", "tm.annotate_user": "false"}), environ={}
    )
    assert settings["sqlalchemy.pool_size"] == "5"


@pytest.mark.parametrize("name", ["development.ini", "production.ini"])
def test_the_shipped_ini_files_hold_no_unknown_setting(name):
    from pathlib import Path

    from pyramid.paster import get_appsettings

    from idp.settings import unknown_settings

    ini = Path(__file__).resolve().parents[2] / name
    assert unknown_settings(get_appsettings(str(ini), name="main")) == []


def test_settings_parsed_twice_stay_valid():
    """The CLI parses, then hands the result to configure_services, which parses."""
    once = parse_settings(raw(), environ={})
    assert parse_settings(once, environ={}) == once


def test_size_bounds_are_said_in_human_units():
    with pytest.raises(SettingsError) as info:
        parse_settings(raw(**{"idp.max_request_body": "134217728"}), environ={})
    assert str(info.value) == (
        "idp.max_request_body: must be between 1 KiB and 64 MiB, in bytes "
        "(got '134217728')"
    )
    settings = parse_settings(raw(**{"idp.max_request_body": "2097152"}), environ={})
    assert settings["idp.max_request_body"] == 2097152
