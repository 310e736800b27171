"""``serve``: a web node, waitress with the ini's ``[server:main]``, stopped gracefully.

What pserve does (logging from the ini, the app from ``[app:main]``, waitress
with ``[server:main]``), plus what a node behind a load balancer needs and
waitress does not do itself: on SIGTERM or SIGINT the node stops accepting
at once (a new connection is refused, so nginx tries the next node), lets
every request it has started receiving finish, closes its idle keep-alive
connections and exits 0. A request that has not finished after ``--grace``
seconds is abandoned (its transaction is never committed: the database rolls
it back) and the node exits all the same. A second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import time
from configparser import ConfigParser
from configparser import Error as IniError
from pathlib import Path

from idp.cli.common import CommandError, load_settings, read_ini

log = logging.getLogger("idp.serve")

DEFAULT_GRACE = 20.0
#: How often the loop looks at its channels while stopping (seconds): the
#: longest a finished request's connection stays open before it is closed.
STOPPING_TICK = 0.05
#: While stopping, a connection with nothing in flight is closed once it has
#: been quiet this long (seconds): long enough for a client that has just
#: connected to send its request.
IDLE_AFTER = 0.25
#: Exit status after a second signal: 128 + the signal, as a shell reports it.
FORCED_EXIT_BASE = 128


def register(groups) -> None:
    parser = groups.add_parser(
        "serve", help="run a web node (waitress), stopped gracefully by SIGTERM"
    )
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="where to listen, instead of [server:main]'s listen, host and port",
    )
    parser.add_argument(
        "--grace",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_GRACE,
        help=(
            "on SIGTERM or SIGINT, how long requests in flight may take to "
            f"finish (default {DEFAULT_GRACE:g}); a second signal stops at once"
        ),
    )
    parser.set_defaults(handler=serve)


def server_settings(path: Path, listen: str | None) -> dict[str, str]:
    """``[server:main]`` of ``path`` as waitress's keyword arguments.

    ``listen``, when given, replaces the ini's ``listen``, ``host`` and
    ``port``.
    """
    parser = ConfigParser(
        defaults={"here": str(path.parent.resolve()), "__file__": str(path.resolve())}
    )
    try:
        with path.open(encoding="utf-8") as file:
            parser.read_file(file)
        if not parser.has_section("server:main"):
            raise CommandError(f"{path}: no [server:main] section")
        section = dict(parser.items("server:main"))
    except (IniError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise CommandError(f"{path}: cannot read [server:main] ({reason})") from None
    for name in ("here", "__file__"):
        section.pop(name, None)
    use = section.pop("use", "egg:waitress#main")
    if use.replace(" ", "") not in ("egg:waitress#main", "egg:waitress"):
        raise CommandError(
            f"{path}: [server:main] uses {use}; 'serve' runs waitress "
            "(use = egg:waitress#main)"
        )
    if listen is not None:
        for name in ("listen", "host", "port"):
            section.pop(name, None)
        section["listen"] = listen
    return section


def serve(args) -> int:
    import waitress
    from waitress.adjustments import Adjustments

    if not args.grace >= 0 or args.grace == float("inf"):
        raise CommandError(f"--grace: {args.grace:g} is not a number of seconds >= 0")
    path = Path(args.config_uri.split("#")[0])
    # Logging from the ini, and the settings checked, before anything else.
    load_settings(args.config_uri)
    options = server_settings(path, args.listen)
    where = "--listen" if args.listen is not None else f"{path} [server:main]"
    for address in options.get("listen", "").split():
        _check_address(address, where)
    try:
        Adjustments(**options)
    except (ValueError, TypeError) as exc:
        raise CommandError(f"{where}: {' '.join(str(exc).split())}") from None

    # A signal while the app is being built (a few seconds) is kept for
    # the loop, which then stops at once; a second one exits now. Without
    # this, Ctrl-C here would print a traceback.
    early: list[int] = []

    def starting(signum, _frame) -> None:
        early.append(signum)
        if len(early) > 1:
            os._exit(FORCED_EXIT_BASE + signum)

    previous = {
        signum: signal.signal(signum, starting)
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        import idp

        app = idp.main(
            {"__file__": str(path.resolve()), "here": str(path.parent.resolve())},
            **read_ini(path),
        )
        try:
            server = waitress.create_server(app, **options)
        except OSError as exc:
            where = options.get("listen") or "[server:main]'s address"
            reason = exc.strerror or str(exc)
            raise CommandError(f"cannot listen on {where}: {reason}") from None
    except BaseException:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        raise
    node = Node(server, grace=args.grace)
    node.signals = len(early)
    return node.run()


_ADDRESS = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(?P<port>[0-9]{1,5})")


def _check_address(address: str, where: str) -> None:
    """``HOST:PORT`` with a port waitress will really use.

    waitress reads any number as a port and lets the socket library wrap
    it (99999 would listen on 34463).
    """
    match = _ADDRESS.fullmatch(address)
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise CommandError(
            f"{where}: {address!r} is not HOST:PORT with a port from 1 to 65535"
        )


class Node:
    """waitress's loop, run here so that a signal can stop it gracefully."""

    def __init__(self, server, *, grace: float) -> None:
        from waitress.channel import HTTPChannel
        from waitress.server import BaseWSGIServer

        self.server = server
        self.grace = grace
        self.adj = server.adj
        # A single listener is its own server; several share a map.
        self.map = server.map if hasattr(server, "map") else server._map
        self.listeners = [d for d in self.map.values() if isinstance(d, BaseWSGIServer)]
        self._channel_class = HTTPChannel
        self.signals = 0
        self.deadline: float | None = None

    def addresses(self) -> list[str]:
        return [
            f"http://{'[' + host + ']' if ':' in host else host}:{port}"
            for host, port in (
                (listener.effective_host, listener.effective_port)
                for listener in self.listeners
            )
        ]

    def channels(self) -> list:
        # A copy in one step: the map is not to be walked while it changes.
        present = list(self.map.values())
        return [d for d in present if isinstance(d, self._channel_class)]

    def _on_signal(self, signum, _frame) -> None:
        # Runs in the main thread, which is the loop's: it only notes the
        # signal and wakes the loop (pull_trigger without a thunk takes no
        # lock, so it cannot wait on one the interrupted code holds).
        self.signals += 1
        if self.signals > 1:
            os.write(2, b"idp-admin serve: second signal, stopping now\n")
            os._exit(FORCED_EXIT_BASE + signum)
        self.listeners[0].pull_trigger()

    def run(self) -> int:
        from waitress import wasyncore

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        print(
            f"serving on {', '.join(self.addresses())}; "
            f"SIGTERM stops gracefully (grace {self.grace:g} s)",
            flush=True,
        )
        try:
            while True:
                stopping = self.signals > 0
                wasyncore.loop(
                    timeout=STOPPING_TICK
                    if stopping
                    else self.adj.asyncore_loop_timeout,
                    map=self.map,
                    use_poll=self.adj.asyncore_use_poll,
                    count=1,
                )
                if self.signals == 0:
                    continue
                if self.deadline is None:
                    self._stop_accepting()
                busy = self._close_idle()
                if not busy:
                    print("stopped: every request finished", flush=True)
                    return 0
                if time.monotonic() >= self.deadline:
                    log.warning(
                        "grace of %g s over: %d connection(s) with a request "
                        "still in flight abandoned",
                        self.grace,
                        busy,
                    )
                    print(
                        f"stopped: grace over, {busy} request(s) abandoned",
                        flush=True,
                    )
                    return 0
        finally:
            self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
            wasyncore.close_all(self.map)

    def _stop_accepting(self) -> None:
        """Take in what the kernel already accepted, then close the listeners."""
        import select

        from waitress import wasyncore

        self.deadline = time.monotonic() + self.grace
        for listener in self.listeners:
            # Connections whose handshake the kernel completed are the
            # clients' already: serve them rather than reset them.
            waiting = select.poll()
            waiting.register(listener.socket, select.POLLIN)
            for _ in range(self.adj.backlog):
                if not waiting.poll(0):
                    break
                listener.handle_accept()
            # Not listener.close(), which closes the trigger too: the
            # worker threads still wake the loop with it.
            wasyncore.dispatcher.close(listener)
        # Said once it is true: a connection from now on is refused.
        print(
            f"stopping: no new connections; up to {self.grace:g} s for "
            "requests in flight",
            flush=True,
        )

    def _close_idle(self) -> int:
        """Close the connections between requests; how many are still open.

        A connection is busy while a request on it is being received
        (``request``), worked on (``requests``) or its answer written
        (``total_outbufs_len``), and while bytes wait in its socket that
        the loop has not read yet (a request that arrived with the signal).
        One that is otherwise quiet is given ``IDLE_AFTER`` seconds, so
        that a client which has just connected, or has just had an answer,
        is not cut off between connecting and sending. The others are told
        to close, which the loop does when it next asks whether they are
        writable.
        """
        now = time.time()
        channels = self.channels()
        for channel in channels:
            busy = (
                channel.requests
                or channel.request is not None
                or channel.total_outbufs_len
                or now - channel.last_activity < IDLE_AFTER
                or _unread(channel.socket)
            )
            if not busy:
                channel.will_close = True
        return len(channels)


def _unread(sock) -> bool:
    """Whether bytes wait in ``sock`` (the peer having closed is not bytes)."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False  # reset: closing it is all that is left
