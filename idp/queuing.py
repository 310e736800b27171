"""A request that waited too long for a thread gets the busy page at once.

Under a burst (a hundred registrations, each a bcrypt hash at cost 12),
waitress queues what its threads cannot take yet. A request that sat in
that queue for a minute is one its user has given up on, or is about to:
doing its work only pushes everyone behind it further back. So when a
thread picks it up, a request older than ``idp.queue_timeout_seconds`` is
answered with the bilingual 503 page and ``Retry-After``, before anything
reads the database or hashes a password.

Its age comes from the front proxy, because waitress does not record when
a request arrived: nginx sets ``X-Request-Start: t=${msec}`` (seconds since
the epoch, to the millisecond) on every request it passes on, overwriting
whatever a client sent. The age then counts all the waiting: in nginx's
connection to this node, in the listen backlog and in waitress's queue.
Without the header (development, no proxy) nothing is refused. A client
that forges the header can only get its own request refused; the clocks of
the proxy and the node must agree (``idp-admin doctor`` checks the node's
against the database's), and an age below zero counts as none.
"""

from __future__ import annotations

import logging
import re
import time

log = logging.getLogger(__name__)

HEADER = "X-Request-Start"
# nginx's ${msec} ("1733356800.123"), with or without New Relic's "t="; a
# whole number of milliseconds or microseconds, as other proxies send.
_START = re.compile(r"(?:t=)?(\d{10})(?:\.(\d{1,6})|(\d{3})|(\d{6}))?")


class QueuedTooLong(Exception):
    """The request waited ``waited`` seconds, more than ``limit``."""

    def __init__(self, waited: float, limit: int) -> None:
        super().__init__(f"waited {waited:.1f} s for a thread (limit {limit} s)")
        self.waited = waited
        self.limit = limit


def request_start(value: str | None) -> float | None:
    """The epoch seconds an ``X-Request-Start`` value names, or None."""
    if not value:
        return None
    match = _START.fullmatch(value.strip())
    if match is None:
        return None
    seconds, fraction, millis, micros = match.groups()
    start = float(seconds)
    if fraction:
        start += float("0." + fraction)
    elif millis:
        start += int(millis) / 1000
    elif micros:
        start += int(micros) / 1_000_000
    return start


def queue_timeout_tween_factory(handler, registry):
    limit = registry.settings["idp.queue_timeout_seconds"]
    if not limit:
        return handler

    def queue_timeout_tween(request):
        start = request_start(request.headers.get(HEADER))
        if start is not None:
            waited = time.time() - start
            if waited > limit:
                exc = QueuedTooLong(waited, limit)
                return request.invoke_exception_view((type(exc), exc, None))
        return handler(request)

    return queue_timeout_tween


def includeme(config) -> None:
    # Above everything that does work (the database's transaction, the
    # views); below the request log, the security headers and the sanity
    # checks, so the busy page is logged, headed and renders any request.
    config.add_tween(
        "idp.queuing.queue_timeout_tween_factory",
        under="idp.tweens.sanity_tween_factory",
        over="idp.dbfaults.fault_tween_factory",
    )
