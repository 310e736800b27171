"""How long ``idp-admin`` takes to start and answer, as an operator runs it.

Runs the installed ``idp-admin`` console script (the one beside this Python)
as separate processes against a scratch copy of ``development.ini`` (SQLite
in a temporary folder, migrated once before timing) and prints the median,
minimum and maximum wall time of each command over N runs. The code measured
is whatever ``idp`` that Python imports, so ``PYTHONPATH=/other/checkout``
measures another checkout with the same interpreter and packages.

Usage::

    .venv/bin/python bench/bench_cli.py [N]     # default N = 10

Not a test: the numbers depend on the machine and its load, which is printed.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IDP_ADMIN = Path(sys.executable).parent / "idp-admin"

COMMANDS = [
    ("--help",),
    ("{ini}", "user", "--help"),
    ("{ini}", "db", "check"),
    ("{ini}", "module", "list"),
    ("{ini}", "role", "list"),
    ("{ini}", "user", "show", "800101-14-5678"),
    ("{ini}", "audit", "tail", "-n", "5"),
    ("{ini}", "mail", "status"),
    ("{ini}", "sp", "list"),
]
# Each is expected to succeed except "user show" of a number never added,
# which answers "no user" after the same start-up and database round trip.
EXPECTED_FAILURES = {("{ini}", "user", "show", "800101-14-5678")}


def scratch_ini(folder: Path) -> Path:
    text = (ROOT / "development.ini").read_text()
    for here_path, name in (
        ("%(here)s/var/idp.sqlite", "idp.sqlite"),
        ("%(here)s/certs", "certs"),
        ("%(here)s/metadata", "metadata"),
        ("%(here)s/var/mail", "mail"),
    ):
        text = text.replace(here_path, str(folder / name))
    ini = folder / "bench.ini"
    ini.write_text(text)
    return ini


def run(args: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    result = subprocess.run(
        [str(IDP_ADMIN), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=60,
    )
    return time.perf_counter() - start, result.returncode


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    import idp

    print(f"idp-admin: {IDP_ADMIN}")
    print(f"idp package: {Path(idp.__file__).parent}")
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {runs} runs each")
    with tempfile.TemporaryDirectory() as tmp:
        ini = scratch_ini(Path(tmp))
        _, status = run([str(ini), "db", "upgrade"])
        if status:
            sys.exit("bench: 'db upgrade' failed on the scratch database")
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        print(f"{'command':<40} {'median':>8} {'min':>8} {'max':>8}")
        for command in COMMANDS:
            args = [part.format(ini=ini) for part in command]
            times = []
            for _ in range(runs):
                seconds, status = run(args)
                if bool(status) != (command in EXPECTED_FAILURES):
                    sys.exit(f"bench: {' '.join(command)} exited {status}")
                times.append(seconds)
            label = " ".join(command).replace("{ini}", "CONFIG")
            print(
                f"{label:<40} {statistics.median(times):8.3f} "
                f"{min(times):8.3f} {max(times):8.3f}"
            )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
