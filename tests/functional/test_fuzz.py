"""OPS-09: a small run of the fuzzer (tests/fuzzing.py) in every test run.

``bench/fuzz.py`` sends the full run (20,000 requests and more) by hand; this
one is bounded (1,500 requests, a fixed seed) so a regression that brings
back a 500 fails CI. Every request goes through a real waitress on
127.0.0.1 with bytes as-is.
"""

from __future__ import annotations

import pytest

from tests.fuzzing import run

REQUESTS = 1500
SEED = 11


@pytest.mark.slow
def test_ops_09_fuzz_gives_no_5xx_no_traceback_and_reaches_deep_code(tmp_path):
    """OPS-09: 1,500 mutated requests: 0 x 5xx, 0 tracebacks, 0 logged errors."""
    report = run(REQUESTS, seed=SEED, threads=2, max_seconds=120, folder=tmp_path)
    summary = report.summary()
    assert report.sent == REQUESTS, summary
    assert report.findings == [], summary
    assert report.server_errors == 0, summary
    assert report.logged_errors == [], summary
    # The control: the requests were not all refused at the door. Valid
    # sessions, CSRF tokens and signatures carried some through to the SAML
    # checks, the forms' own validation, and answers that succeed.
    assert report.codes["bad_request"] < REQUESTS / 2, summary
    for code in ("saml_bad_message", "saml_bad_signature", "csrf"):
        assert report.codes[code] > 0, summary
    assert report.statuses[200] > 0 and report.statuses[303] > 0, summary
