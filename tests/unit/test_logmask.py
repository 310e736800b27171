"""DATA-08: personal data masked out of log records."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from idp.logmask import MaskingFilter, install, mask
from idp.requestlog import REFERENCE_PATTERN, new_reference

# What must never reach a log line, in the forms the cases below use.
RAW = re.compile(
    r"900101-?14-?5678|siti\.nurhaliza@|ali@|hunter2|s3cr3t|tok-abc123"
    r"|345[ -]?6789|GBR:123456789"
)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("ic 900101-14-5678", "ic XXXXXX-XX-5678"),
        ("ic 900101145678.", "ic XXXXXX-XX-5678."),
        ("identifier=900101145678&next=/", "identifier=XXXXXX-XX-5678&next=/"),
        ("IC900101145678", "ICXXXXXX-XX-5678"),
        ("to siti.nurhaliza@moe.gov.my,", "to s***@moe.gov.my,"),
        ("<ali@example.com>", "<a***@example.com>"),
        ("phone 012-345 6789", "phone XXX-XXX 6789"),
        ("phone 0123456789", "phone XXXXXX6789"),
        ("phone +60 12-345 6789", "phone +XX XX-XXX 6789"),
        ("phone +60123456789", "phone +XXXXXXX6789"),
        ("phone 60123456789", "phone XXXXXXX6789"),
        ("office 03-1234 5678", "office XX-XXXX 5678"),
        ("uk +44 20 7946 0958", "uk +XX XX XXXX 0958"),
        ("GET /reset?token=tok-abc123&lang=ms", "GET /reset?token=***&lang=ms"),
        ("password=hunter2 next", "password=*** next"),
        ("new_password=hunter2", "new_password=***"),
        ("Password: s3cr3t", "Password: ***"),
        ("{'password': 'hunter2', 'login': 'x'}", "{'password': ***, 'login': 'x'}"),
        ('{"client_secret": "s3cr3t two"}', '{"client_secret": ***}'),
        ("csrf_token=tok-abc123;", "csrf_token=***;"),
        ("passport GBR:123456789", "passport GBR ****6789"),
        ("passport MYS A12345678", "passport MYS ****5678"),
    ],
)
def test_data_08_each_kind_of_personal_data_is_masked(text, masked):
    """DATA-08: identity numbers, emails, phones, passports and secrets are masked."""
    assert mask(text) == masked
    assert mask(masked) == masked


@pytest.mark.parametrize(
    "text",
    [
        "GET /login 200 in 12 ms",
        "academic year 2024",
        "HTTP 404",
        "reference 123456",
        "pid 12345 port 6543",
        "at 2026-05-01T10:00:00.123456+08:00",
        "from 192.0.2.10:51234",
        "took 0.0123456789 s",
        "user 1b4e28ba-2d11-4d99-9abc-123456789012",
        "sha256 " + "0" * 20 + "900101145678" + "a" * 32,
        "outbox 3 queued, 0 failing",
        "a token of thanks",
        "USA 2024",
    ],
)
def test_ordinary_text_and_numbers_are_left_alone(text):
    assert mask(text) == text


def test_masking_a_long_blob_takes_linear_time():
    blob = "A" * 100_000 + "token" + "b" * 100_000 + "@" + "1" * 100_000
    assert mask(blob) == blob


@pytest.fixture
def log():
    """A logger of its own, writing to a string, with the filter installed."""
    stream = io.StringIO()
    logger = logging.getLogger("tests.logmask")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    install(logger)
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def test_data_08_a_debug_flow_logs_nothing_raw(log):
    """DATA-08: a flow logged at DEBUG leaves no raw personal data or secret."""
    logger, stream = log
    logger.debug("login attempt for %s from %s", "900101-14-5678", "192.0.2.10")
    logger.debug("form %r", {"identifier": "900101145678", "password": "hunter2"})
    logger.info("mail to %(to)s queued", {"to": "siti.nurhaliza@moe.gov.my"})
    logger.info("GET /reset?token=tok-abc123 200")
    logger.warning("sms to +60 12-345 6789 failed; passport GBR:123456789")
    logger.info("status 404 for reference 123456 in 2024")

    out = stream.getvalue()
    assert RAW.search(out) is None, out
    assert "XXXXXX-XX-5678" in out
    assert "s***@moe.gov.my" in out
    assert "'password': ***" in out
    assert "GBR ****6789" in out
    # The control: ordinary numbers survive.
    assert "INFO status 404 for reference 123456 in 2024" in out


def test_data_08_tracebacks_and_stacks_are_masked(log):
    """DATA-08: exception text and stack info go through the mask too."""
    logger, stream = log
    try:
        raise ValueError("no user with email ali@example.com")
    except ValueError:
        logger.exception("lookup failed")
    logger.info("here", stack_info=True)

    out = stream.getvalue()
    assert "ValueError: no user with email a***@example.com" in out
    assert "Traceback (most recent call last)" in out
    assert "Stack (most recent call last)" in out
    assert RAW.search(out) is None, out


class Unprintable:
    def __str__(self):
        raise RuntimeError("no str")

    __repr__ = __str__


@pytest.mark.parametrize(
    ("msg", "args", "expected"),
    [
        ({"ic": "900101145678"}, (), "{'ic': 'XXXXXX-XX-5678'}"),
        (12345, (), "12345"),
        (None, (), "None"),
        ("%d items for %s", ("x", "ali@example.com"), "('x', 'a***@example.com')"),
        ("%s and %s", ("900101145678",), "('XXXXXX-XX-5678',)"),
        ("%(missing)s", ({"ic": "900101145678"},), "{'ic': 'XXXXXX-XX-5678'}"),
        ("value %s", (Unprintable(),), "cannot be rendered"),
        (Unprintable(), (), "cannot be rendered"),
    ],
)
def test_the_filter_never_raises_on_odd_records(msg, args, expected, capsys):
    record = logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, None)
    assert MaskingFilter().filter(record) is True
    assert expected in record.getMessage()
    assert record.args == ()

    # And a handler can format what it left.
    handler = logging.StreamHandler(sys.stderr)
    handler.handle(record)
    assert "Logging error" not in capsys.readouterr().err


def test_install_covers_every_root_handler_once():
    root = logging.getLogger()
    added = [logging.StreamHandler(io.StringIO()) for _ in range(2)]
    for handler in added:
        root.addHandler(handler)
    try:
        install()
        install()
        for handler in root.handlers:
            filters = [f for f in handler.filters if isinstance(f, MaskingFilter)]
            assert len(filters) == 1, handler
    finally:
        for handler in root.handlers:
            for f in [f for f in handler.filters if isinstance(f, MaskingFilter)]:
                handler.removeFilter(f)
        for handler in added:
            root.removeHandler(handler)


def test_the_mask_never_rewrites_a_request_reference():
    """A reference is quoted by a user from an error page and looked up in the
    log; a reference the mask takes for a phone or MyKad number no longer
    matches its own log line. Hex references did, a few in a hundred."""
    references = [new_reference() for _ in range(20_000)]
    assert all(re.fullmatch(REFERENCE_PATTERN, r) for r in references)
    assert len(set(references)) == len(references)
    for reference in references:
        for line in (f"GET /login 200 1.0ms ref={reference}", f"refused [{reference}]"):
            assert mask(line) == line
    # The control: the mask still bites on a reference-shaped phone number.
    assert mask("ref=0123456789AB") != "ref=0123456789AB"
