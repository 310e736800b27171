"""``idp-admin CONFIG serve``: a web node that stops without dropping a request (issue 17).

Real processes and real signals: the process boundary is what is tested.
A request is held in flight deterministically by the client, which sends
its headers and half of its body, then the rest only after the node has
said it is stopping; waitress dispatches a request to the app only once
its body is in, so the request is in flight for as long as the test wants
and nothing in the app is slowed for the test.
"""

from __future__ import annotations

import signal
import socket

import pytest

from tests.cli import admin
from tests.nodes import HOST, NodeProcess, free_port

pytestmark = pytest.mark.slow

BODY = b"0123456789"


def half_sent(port: int) -> socket.socket:
    """A connection with a GET /healthz whose body is half sent."""
    conn = socket.create_connection((HOST, port), timeout=20)
    conn.sendall(
        b"GET /healthz HTTP/1.1\r\nHost: idp.test\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(BODY) + BODY[:5]
    )
    return conn


def finish(conn: socket.socket) -> bytes:
    """Send the rest of the body; everything the node answers."""
    with conn:
        conn.sendall(BODY[5:])
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def refused(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def keep_alive_idle(port: int) -> socket.socket:
    """A connection that had one answer and stays open for the next request."""
    conn = socket.create_connection((HOST, port), timeout=20)
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: idp.test\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
    )
    while len(body) < length:
        body += conn.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    return conn


@pytest.fixture
def node(db):
    node = NodeProcess(db, free_port(), grace=15)
    yield node
    node.kill()


def test_sigterm_finishes_the_request_in_flight_refuses_new_ones_and_exits_0(node):
    node.start()
    idle = keep_alive_idle(node.port)
    in_flight = half_sent(node.port)

    node.signal(signal.SIGTERM)
    node.wait_for("stopping:", 10)

    # No new connection, at once: nginx moves on to the next node.
    assert refused(node.port)
    # The idle keep-alive connection is closed by the node (end of stream).
    idle.settimeout(5)
    assert idle.recv(1) == b""
    idle.close()
    # The request that was in flight completes.
    answer = finish(in_flight)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert node.wait(timeout=10) == 0
    assert "stopped: every request finished" in node.printed, node.printed
    assert "Traceback" not in node.log_tail(400)


def test_sigint_is_as_graceful_and_an_idle_node_exits_at_once(node):
    node.start()
    node.signal(signal.SIGINT)
    assert node.wait(timeout=5) == 0
    assert "stopped: every request finished" in node.printed


def test_a_second_signal_stops_at_once(node):
    node.start()
    in_flight = half_sent(node.port)
    node.signal(signal.SIGTERM)
    node.wait_for("stopping:", 10)
    node.signal(signal.SIGTERM)
    # Well before the 15 s grace: the operator asked twice.
    assert node.wait(timeout=5) == 128 + signal.SIGTERM
    in_flight.close()


def test_a_request_past_the_grace_is_abandoned_and_the_node_still_exits(db):
    node = NodeProcess(db, free_port(), grace=0.5)
    try:
        node.start()
        in_flight = half_sent(node.port)
        node.signal(signal.SIGTERM)
        assert node.wait(timeout=10) == 0
        assert "stopped: grace over, 1 request(s) abandoned" in node.printed
        in_flight.close()
    finally:
        node.kill()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grace", "-1"], "--grace: -1 is not a number of seconds >= 0"),
        (["--grace", "nan"], "--grace: nan is not a number of seconds >= 0"),
        (["--listen", "127.0.0.1:http-alt:x"], "--listen: '127.0.0.1:http-alt:x' is"),
        # waitress alone would listen on 34463 (99999 - 65536).
        (["--listen", "127.0.0.1:99999"], "--listen: '127.0.0.1:99999' is not"),
        (["--listen", "127.0.0.1"], "--listen: '127.0.0.1' is not HOST:PORT"),
        (["--listen", "127.0.0.1:0"], "--listen: '127.0.0.1:0' is not"),
    ],
)
def test_bad_options_are_one_line(db, args, message):
    result = admin(db, "serve", *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_an_address_in_use_is_one_line(db):
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = NodeProcess(db, port)
        node.start(wait=False)
        assert node.wait(timeout=60) == 1
    assert node.log_tail().splitlines()[-1] == (
        f"idp-admin: cannot listen on {HOST}:{port}: Address already in use"
    )


def test_a_server_section_for_another_server_is_refused(db):
    text = db.read_text().replace("use = egg:waitress#main", "use = egg:gunicorn#main")
    db.write_text(text)
    result = admin(db, "serve")
    assert result.returncode == 1
    assert "'serve' runs waitress" in result.stderr
