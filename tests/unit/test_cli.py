"""The idp-admin command registry: one list of groups, each imported on demand."""

from __future__ import annotations

import importlib

import pytest

from idp.cli import COMMANDS, build_parser


def _group_help(parser, name: str) -> str:
    (groups,) = [action for action in parser._actions if action.dest == "group"]
    (choice,) = [action for action in groups._choices_actions if action.dest == name]
    return choice.help


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_group_registers_itself_with_the_registry_help(name):
    """The help --help shows without importing a group is the group's own."""
    entry = COMMANDS[name]
    parser = build_parser(name)
    assert _group_help(parser, name) == entry.help
    assert _group_help(build_parser(), name) == entry.help
    # The group's real parser (with its actions) replaced the placeholder.
    (groups,) = [action for action in parser._actions if action.dest == "group"]
    assert groups.choices[name].add_help
    assert importlib.import_module(entry.module).register


def test_every_group_in_the_modules_is_in_the_registry():
    import argparse

    for module in {entry.module for entry in COMMANDS.values()}:
        groups = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(groups)
        assert set(groups.choices) <= set(COMMANDS), module


@pytest.mark.parametrize("name", ["development.ini", "production.ini"])
def test_settings_are_read_as_pastedeploy_reads_them(name, tmp_path):
    """idp-admin reads the ini itself (fast); the app gets it from PasteDeploy."""
    from pathlib import Path

    from pyramid.paster import get_appsettings

    from idp.cli.common import read_ini

    shipped = Path(__file__).resolve().parents[2] / name
    # Elsewhere, so %(here)s must follow the file.
    moved = tmp_path / name
    moved.write_text(shipped.read_text())
    for ini in (shipped, moved):
        assert read_ini(ini) == dict(get_appsettings(str(ini), name="main"))
    assert read_ini(moved)["jinja2.directories"] == f"{tmp_path}/templates"
