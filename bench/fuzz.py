"""OPS-09 fuzzing: mutated requests at the IdP under waitress, 0 x 5xx expected.

Starts the app (development-like settings, captcha on and solved, rate
limits out of reach, a scratch SQLite database, two SPs and one user) under
waitress with ``development.ini``'s server settings on 127.0.0.1, and sends
``-n`` mutated requests across the SAML endpoints, the forms and the captcha
routes, with bad UTF-8 in every part of the request (tests/fuzzing.py says
what is sent). Prints the status histogram, the error pages by code, and
every finding: a status >= 500, a connection closed without an answer, a
body with "Traceback", or an ERROR logged by the app or waitress. Exit 1 if
there is any finding.

Usage::

    .venv/bin/python bench/fuzz.py [-n 20000] [--seed 20261204] [--threads 2]
        [--max-seconds 1800] [--findings FILE]

Bounded by ``-n`` and ``--max-seconds``. Not a test (a 1,500-request run is:
tests/functional/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fuzzing import run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000, help="requests to send")
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument("--threads", type=int, default=2, help="client threads")
    parser.add_argument("--max-seconds", type=float, default=1800)
    parser.add_argument(
        "--findings", type=Path, help="write each finding's request here"
    )
    args = parser.parse_args()
    # The app's own log lines (refusals, CSRF failures) would drown the
    # report; ERRORs are collected by the harness whatever the level here.
    logging.basicConfig(level=logging.CRITICAL)
    warnings.simplefilter("ignore")
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    report = run(
        args.n, seed=args.seed, threads=args.threads, max_seconds=args.max_seconds
    )
    print(f"commit {commit or 'unknown'}, {args.threads} client threads")
    print(report.summary())
    for line in report.logged_errors:
        print("LOGGED", line)
    if args.findings and report.findings:
        with args.findings.open("wb") as out:
            for kind, status, raw, why in report.findings:
                out.write(f"### {kind} {status} {why}\n".encode() + raw + b"\n\n")
    failed = report.findings or report.logged_errors or report.sent < args.n
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
