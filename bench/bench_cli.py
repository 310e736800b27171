"""How long ``idp-admin`` takes to start and answer, as an operator runs it.

Runs the installed ``idp-admin`` console script (the one beside this Python)
as separate processes against a scratch copy of ``development.ini`` (SQLite
in a temporary folder, migrated once before timing) and prints the median,
minimum and maximum wall time of each command over N runs, and its median
CPU time (user + system), which a busy machine disturbs less. The code measured
is whatever ``idp`` that Python imports, so ``PYTHONPATH=/other/checkout``
measures another checkout with the same interpreter and packages.

Usage::

    .venv/bin/python bench/bench_cli.py [N]     # default N = 10

Not a test: the numbers depend on the machine and its load, which is printed.
"""

from __future__ import annotations

import os
import resource
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


def run(args: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and exit status of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        [str(IDP_ADMIN), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=60,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.returncode


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    import idp

    print(f"idp-admin: {IDP_ADMIN}")
    print(f"idp package: {Path(idp.__file__).parent}")
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {runs} runs each")
    with tempfile.TemporaryDirectory() as tmp:
        ini = scratch_ini(Path(tmp))
        *_, status = run([str(ini), "db", "upgrade"])
        if status:
            sys.exit("bench: 'db upgrade' failed on the scratch database")
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        print("seconds: wall median, min, max; CPU (user + system) median")
        print(f"{'command':<36} {'median':>7} {'min':>7} {'max':>7} {'CPU':>7}")
        for command in COMMANDS:
            args = [part.format(ini=ini) for part in command]
            walls, cpus = [], []
            for _ in range(runs):
                wall, cpu, status = run(args)
                if bool(status) != (command in EXPECTED_FAILURES):
                    sys.exit(f"bench: {' '.join(command)} exited {status}")
                walls.append(wall)
                cpus.append(cpu)
            label = " ".join(command).replace("{ini}", "CONFIG")
            print(
                f"{label:<36} {statistics.median(walls):7.3f} {min(walls):7.3f} "
                f"{max(walls):7.3f} {statistics.median(cpus):7.3f}"
            )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
