"""Alembic migrations; see env.py. Never scanned by Pyramid."""

from pathlib import Path

from alembic.config import Config

SCRIPT_LOCATION = str(Path(__file__).parent)


def alembic_config(connection=None, ini_path: str | None = None) -> Config:
    """An Alembic Config for our scripts, optionally bound to a connection."""
    cfg = Config(ini_path) if ini_path else Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg
