"""What the password policy costs: load time, memory, and time per check.

Loads the policy once (the breached-password Bloom filter, the common and
Malay word lists) and reports the resident memory it added and the filter's
size; then times ``check_policy`` on a mix of passwords: strong passphrases
(every rule runs to the end), issue 11's weak ones, breached ones from the
test sample, and long ones (256 characters), each with the user's name,
number, email and phrase as context, as the forms pass them. Prints p50,
p95 and p99 in microseconds per check, per kind. Not a test.

Usage::

    .venv/bin/python bench/bench_password_policy.py [-n 2000]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from idp.services import passwords  # noqa: E402

CONTEXT = {
    "identifiers": [
        "080512145678",
        "080512-14-5678",
        "aisyah.ahmad@example.com.my",
        "aisyah.ahmad",
        "Nur",
        "Aisyah",
        "binti",
        "Ahmad",
    ],
    "phrase": "Nasi lemak kegemaran saya",
}
KINDS = {
    "strong": [
        "gajah biru minum kopi susu",
        "lantern oyster gravel violet",
        "Payung merah bawah hujan 1987",
        "Kucing oren tidur atas bumbung zink",
    ],
    "weak (issue 11)": [
        "password1234",
        "123456789012",
        "aaaaaaaaaaaa",
        "iloveyou1234",
        "malaysia1234",
        "qwertyuiopasdf",
        "abcdefghijkl",
    ],
    "breached sample": [
        line
        for line in (ROOT / "tests" / "data" / "breached-sample.txt")
        .read_text(encoding="utf-8")
        .splitlines()
        if line and not line.startswith("#") and len(line) >= 12
    ][:200],
    "256 characters": [
        "-".join(f"kayu{i:03d}" for i in range(40))[:256],
        ("Sungai Pahang mengalir jauh ke laut China Selatan " * 6)[:256],
    ],
}


def rss_kib() -> int:
    """Resident set size now, in KiB, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="checks per kind")
    args = parser.parse_args(argv)

    before = rss_kib()
    started = time.perf_counter()
    service = passwords.BcryptPasswordService(
        rounds=4, service_words={"kementerian", "pendidikan", "malaysia"}
    )
    loaded = time.perf_counter() - started
    after = rss_kib()
    bloom = service.breached
    print(
        f"load: {loaded * 1000:.1f} ms; RSS +{(after - before) / 1024:.1f} MiB; "
        f"filter {len(bloom.bits) / 2**20:.2f} MiB, {bloom.entries:,} keys, "
        f"k={bloom.hashes}"
    )
    print(f"{'kind':<18}{'checks':>8}{'p50 µs':>10}{'p95 µs':>10}{'p99 µs':>10}")
    everything = []
    for kind, samples in KINDS.items():
        timings = []
        for i in range(args.n):
            password = samples[i % len(samples)]
            start = time.perf_counter_ns()
            service.check_policy(password, **CONTEXT)
            timings.append((time.perf_counter_ns() - start) / 1000)
        everything += timings
        print(
            f"{kind:<18}{len(timings):>8}{statistics.median(timings):>10.1f}"
            f"{percentile(timings, 0.95):>10.1f}{percentile(timings, 0.99):>10.1f}"
        )
    print(
        f"{'all':<18}{len(everything):>8}{statistics.median(everything):>10.1f}"
        f"{percentile(everything, 0.95):>10.1f}{percentile(everything, 0.99):>10.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
