"""Garbage-collector pauses over in-process SSOs, with and without gc.freeze().

The same harness as bench/bench_sso.py (the real WSGI app, a signed-in
user, a fresh Redirect AuthnRequest per call, SQLite in a scratch folder,
one thread): every collection is timed through ``gc.callbacks``, and per
generation the script prints how many ran, their total, median and
longest pause, and the SSO rate. ``--freeze`` does what ``idp.main``
does after start-up (``idp.freeze_start_up``: ``gc.collect()`` then
``gc.freeze()``), once the app is built and the user signed in; without
it, nothing is frozen. Run each mode in its own process (a freeze is for
the life of the process)::

    .venv/bin/python bench/bench_gc.py -n 3000
    .venv/bin/python bench/bench_gc.py -n 3000 --freeze

Not a test.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_sso

from idp import freeze_start_up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3000, help="SSOs timed")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--freeze", action="store_true")
    args = parser.parse_args(argv)
    variant = bench_sso.VARIANTS[0]
    with tempfile.TemporaryDirectory() as folder:
        app, engine, _ = bench_sso.build_app(
            f"sqlite:///{folder}/bench.sqlite", Path(folder)
        )
        bench_sso.register(engine)
        call = bench_sso.Caller(app, bench_sso.sign_in(app))
        if args.freeze:
            freeze_start_up()
        for query in bench_sso.queries_for(variant, args.warmup):
            call(query)
        queries = bench_sso.queries_for(variant, args.n)
        pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        started: list[float] = []

        def timer(phase: str, info: dict) -> None:
            if phase == "start":
                started.append(time.perf_counter())
            elif started:
                pauses[info["generation"]].append(time.perf_counter() - started.pop())

        latencies = []
        gc.callbacks.append(timer)
        begin = time.perf_counter()
        try:
            for query in queries:
                at = time.perf_counter()
                call(query)
                latencies.append(time.perf_counter() - at)
        finally:
            elapsed = time.perf_counter() - begin
            gc.callbacks.remove(timer)
        engine.dispose()
    mode = "gc.freeze() after start-up" if args.freeze else "no freeze"
    print(
        f"{mode}: {args.n} SSOs in {elapsed:.1f} s, {args.n / elapsed:.0f}/s; "
        f"frozen objects {gc.get_freeze_count()}; latency p50 "
        f"{statistics.median(latencies) * 1000:.1f} ms, max "
        f"{max(latencies) * 1000:.1f} ms"
    )
    for generation, times in pauses.items():
        if times:
            print(
                f"  gen {generation}: {len(times):5d} collections, total "
                f"{sum(times) * 1000:8.1f} ms, median "
                f"{statistics.median(times) * 1000:6.2f} ms, max "
                f"{max(times) * 1000:7.1f} ms"
            )
        else:
            print(f"  gen {generation}: none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
