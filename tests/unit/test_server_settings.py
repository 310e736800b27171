"""The shipped ``[server:main]`` sections: waitress sized for its place.

production.ini runs behind nginx (idle keepalive connections, whole
requests buffered); development.ini serves one developer. Each value is
checked against what it must agree with, so a change to one side (the
database pool, the queue timeout, nginx's keepalive) shows up here.
"""

from __future__ import annotations

import configparser

import pytest
from waitress.adjustments import Adjustments

from tests.app import ROOT
from tests.served import server_settings

# What docs/deploy.md's nginx site sets: upstream keepalive_timeout.
NGINX_UPSTREAM_KEEPALIVE_SECONDS = 60
SIZED = (
    "threads",
    "connection_limit",
    "channel_timeout",
    "cleanup_interval",
    "backlog",
)


def app_settings(ini: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / ini)
    return dict(parser["app:main"])


@pytest.mark.parametrize("ini", ["production.ini", "development.ini"])
def test_waitress_takes_every_server_setting(ini):
    """An unknown or malformed setting would stop pserve at start."""
    Adjustments(**server_settings(ROOT / ini))


def test_production_sizes_waitress_for_a_proxy_in_front():
    server = server_settings(ROOT / "production.ini")
    app = app_settings("production.ini")
    assert set(SIZED) <= set(server), "production.ini must size these itself"
    adj = Adjustments(**server)
    # No thread waits for a database connection.
    assert adj.threads <= int(app["sqlalchemy.pool_size"])
    # More threads than the two cores: requests wait on the database and
    # bcrypt, which release the GIL.
    assert adj.threads >= 4
    # nginx closes idle upstream connections before waitress does.
    assert adj.channel_timeout > NGINX_UPSTREAM_KEEPALIVE_SECONDS
    assert adj.cleanup_interval < adj.channel_timeout
    # Room for nginx's idle connections plus a burst, but no deeper a
    # queue than the threads can work through within the queue timeout
    # at about 3 bcrypt-bound requests per second per core on 2 cores.
    assert adj.connection_limit > 64
    assert adj.connection_limit <= int(app["idp.queue_timeout_seconds"]) * 3 * 2 + 64
    assert adj.backlog >= adj.connection_limit
    assert adj.asyncore_use_poll


def test_development_stays_small_and_forgiving():
    adj = Adjustments(**server_settings(ROOT / "development.ini"))
    assert 1 <= adj.threads <= 8
    assert adj.channel_timeout >= 30
    assert adj.connection_limit >= adj.threads
