"""What every command needs: the settings of the ini it was given."""

from __future__ import annotations

from pathlib import Path

from idp.settings import SettingsError, parse_settings


def load_settings(config_uri: str) -> dict:
    from plaster.exceptions import PlasterError
    from pyramid.paster import get_appsettings, setup_logging

    from idp.cli import CommandError
    from idp.logmask import install

    if not Path(config_uri.split("#")[0]).is_file():
        raise CommandError(f"{config_uri}: no such configuration file")
    try:
        setup_logging(config_uri)
        install()
        raw = get_appsettings(config_uri, name="main")
        return parse_settings(raw)
    except SettingsError as exc:
        raise CommandError(f"{config_uri}: {exc}") from None
    except (PlasterError, LookupError, ValueError) as exc:
        raise CommandError(f"{config_uri}: cannot read it ({exc})") from None
