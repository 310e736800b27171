"""A signed federation aggregate of 10,000 SP entities (eduGAIN size), and
what verifying it costs.

Builds an ``md:EntitiesDescriptor`` with tests/aggregates.py: every SP has
its own RSA-2048 key and self-signed certificate (published for signing and
encryption), its own https host for ACS and SLO, requested attributes, two
NameID formats, an entity category and Malay/English display names.  The
federation signs it with its own RSA-3072 key (RSA-SHA256, ``URI="#ID"`` and
exclusive c14n by default; ``--reference whole --c14n inclusive`` for the
other common shape).

Generating 10,000 RSA-2048 keys is the slow part (about 35 ms of CPU each on
this machine class, some 6 CPU-minutes): they are made in ``--workers``
processes and cached under ``var/bench/sp-keys-2048/`` (one PEM file per SP,
key and certificate; ``IDP_BENCH_DIR`` moves that cache), so later runs,
and other benchmarks that need the SPs' keys, reuse them.  The aggregate
itself is cached too (``var/bench/aggregate-N-REFERENCE-C14N.xml``, rebuilt
with ``--rebuild`` or when its validUntil is less than two days away).

Then, in a fresh process each time (so peak RSS is the verifier's, not the
generator's), ``idp.saml.metadata_signature.verify_metadata`` is timed on
the file, with peak RSS over the process's baseline, and the two ways of
splitting the verified tree into per-entity documents are compared
(``etree.tostring`` of each EntityDescriptor, ``copy.deepcopy`` of each).

Usage::

    .venv/bin/python bench/make_aggregate.py                 # 10,000 entities
    .venv/bin/python bench/make_aggregate.py --entities 1000 --trials 1
    .venv/bin/python bench/make_aggregate.py --reference whole --c14n inclusive

Prints sizes and times.  Not a test.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import datetime as dt
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from idp.saml.keys import make_pem_pair, write_private_key  # noqa: E402

# IDP_BENCH_DIR lets several checkouts share one cache of keys.
BENCH_DIR = Path(os.environ.get("IDP_BENCH_DIR") or ROOT / "var" / "bench")
# A federation's usual validity (eduGAIN: 14 days); a cached aggregate is
# rebuilt (from cached keys) when fewer than two days remain.
VALIDITY = dt.timedelta(days=14)
KEY_SIZE = 2048
FEDERATION_KEY_SIZE = 3072


# --------------------------------------------------------------------------
# Keys


def _key_path(keys_dir: Path, index: int) -> Path:
    return keys_dir / f"{index:05d}.pem"


def _make_keys(job: tuple[str, list[int]]) -> int:
    """Worker: write the key+certificate PEM of each SP index (0600)."""
    keys_dir, indexes = Path(job[0]), job[1]
    for index in indexes:
        key_pem, cert_pem = make_pem_pair(
            f"sp{index}.example.edu.my", key_size=KEY_SIZE
        )
        path = _key_path(keys_dir, index)
        partial = path.with_suffix(".tmp")
        write_private_key(partial, key_pem + cert_pem)
        partial.replace(path)
    return len(indexes)


def ensure_sp_keys(count: int, workers: int) -> tuple[Path, float, int]:
    """Make the SP keys that are not cached yet: (dir, seconds, how many made)."""
    keys_dir = BENCH_DIR / f"sp-keys-{KEY_SIZE}"
    keys_dir.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(count) if not _key_path(keys_dir, i).exists()]
    if not missing:
        return keys_dir, 0.0, 0
    chunk = 100
    jobs = [
        (str(keys_dir), missing[i : i + chunk]) for i in range(0, len(missing), chunk)
    ]
    start = time.perf_counter()
    done = 0
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        for made in pool.map(_make_keys, jobs):
            done += made
            elapsed = time.perf_counter() - start
            rate = done / elapsed
            print(
                f"\r  keys: {done:,}/{len(missing):,}  {rate:.0f}/s  "
                f"ETA {(len(missing) - done) / rate:.0f} s ",
                end="",
                flush=True,
            )
    print()
    return keys_dir, time.perf_counter() - start, len(missing)


def certificate_of(keys_dir: Path, index: int) -> str:
    text = _key_path(keys_dir, index).read_text()
    return text[text.index("-----BEGIN CERTIFICATE-----") :]


def federation_keys() -> tuple[str, str]:
    key_file = BENCH_DIR / "federation.key"
    cert_file = BENCH_DIR / "federation.crt"
    if not (key_file.exists() and cert_file.exists()):
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        key_pem, cert_pem = make_pem_pair(
            "federation.example.edu.my", key_size=FEDERATION_KEY_SIZE
        )
        write_private_key(key_file, key_pem)
        cert_file.write_bytes(cert_pem)
    return str(key_file), str(cert_file)


# --------------------------------------------------------------------------
# The aggregate


def build(args: argparse.Namespace) -> tuple[Path, str]:
    """The signed aggregate file (built unless cached) and the signer's cert."""
    from tests.aggregates import make_aggregate, sp_entity

    out = BENCH_DIR / f"aggregate-{args.entities}-{args.reference}-{args.c14n}.xml"
    key_file, cert_file = federation_keys()
    if out.exists() and not args.rebuild:
        until = _valid_until(out)
        if until is not None and until - dt.datetime.now(dt.UTC) > dt.timedelta(days=2):
            print(f"aggregate: {out} (cached until {until:%Y-%m-%d}; --rebuild)")
            return out, cert_file
    keys_dir, seconds, made = ensure_sp_keys(args.entities, args.workers)
    if made:
        print(
            f"SP keys: made {made:,} RSA-{KEY_SIZE} keys in {seconds:.1f} s with "
            f"{args.workers} processes ({seconds * args.workers / made * 1000:.0f} ms "
            "per key per process)"
        )
    else:
        print(f"SP keys: {args.entities:,} cached in {keys_dir}")
    start = time.perf_counter()
    entities = [
        sp_entity(i, certificate=certificate_of(keys_dir, i))
        for i in range(args.entities)
    ]
    read = time.perf_counter() - start
    start = time.perf_counter()
    unsigned = make_aggregate(
        entities,
        valid_until=dt.datetime.now(dt.UTC) + VALIDITY,
        cache_duration="PT6H",
    )
    built = time.perf_counter() - start
    from tests.aggregates import sign_metadata

    start = time.perf_counter()
    signed = sign_metadata(
        unsigned,
        key_file,
        reference=args.reference,
        c14n=args.c14n,
        cert_file=cert_file,
    )
    signing = time.perf_counter() - start
    partial = out.with_suffix(".tmp")
    partial.write_bytes(signed)
    partial.replace(out)
    print(
        f"aggregate: {out}\n"
        f"  {args.entities:,} entities, {len(signed):,} bytes "
        f"({len(signed) / 1024 / 1024:.1f} MiB, {len(signed) / args.entities:,.0f} "
        f"bytes per entity)\n"
        f"  certificates read {read:.2f} s, tree built and serialized "
        f"{built:.2f} s, signed (parse + c14n + RSA-{FEDERATION_KEY_SIZE}) "
        f"{signing:.2f} s"
    )
    return out, cert_file


def _valid_until(path: Path) -> dt.datetime | None:
    """The aggregate's validUntil, read from the start of the file."""
    with path.open("rb") as handle:
        head = handle.read(4096).decode("utf-8", "replace")
    match = re.search(r'validUntil="([0-9T:Z-]+)"', head)
    if match is None:
        return None
    return dt.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.UTC
    )


# --------------------------------------------------------------------------
# Measuring, in a fresh process


def _status_kib(field: str) -> int:
    """A VmRSS / VmHWM line of /proc/self/status, in KiB.

    VmHWM, not ru_maxrss: Linux carries a parent's peak across fork and exec
    into the child's ru_maxrss, so a child of the generator would report the
    generator's gigabyte.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(path: str, cert_file: str) -> dict[str, float]:
    """One trial: read, verify, split; times and memory as a dict."""
    from lxml import etree

    from idp.saml.metadata_signature import parse_anchor, verify_metadata
    from idp.saml.xml import MD_NS

    anchor = parse_anchor(Path(cert_file).read_text())
    data = Path(path).read_bytes()
    baseline = _status_kib("VmRSS")
    start = time.perf_counter()
    cpu = time.process_time()
    root = verify_metadata(data, anchor)
    verify = time.perf_counter() - start
    verify_cpu = time.process_time() - cpu
    peak = _status_kib("VmHWM")
    after_verify = _status_kib("VmRSS")
    entities = root.findall(f"{{{MD_NS}}}EntityDescriptor")

    start = time.perf_counter()
    as_bytes = [etree.tostring(e) for e in entities]
    tostring = time.perf_counter() - start
    start = time.perf_counter()
    canonical = [
        hashlib.sha256(etree.tostring(e, method="c14n", exclusive=True)).digest()
        for e in entities
    ]
    c14n = time.perf_counter() - start
    del canonical
    start = time.perf_counter()
    reparsed = [etree.fromstring(b) for b in as_bytes]
    fromstring = time.perf_counter() - start
    del reparsed
    start = time.perf_counter()
    copies = [copy.deepcopy(e) for e in entities]
    deepcopy = time.perf_counter() - start
    start = time.perf_counter()
    for element in copies:
        etree.cleanup_namespaces(element)
    cleanup = time.perf_counter() - start
    return {
        "entities": len(entities),
        "bytes": len(data),
        "verify_s": verify,
        "verify_cpu_s": verify_cpu,
        "baseline_mib": baseline / 1024,
        "peak_mib": peak / 1024,
        "tree_mib": (after_verify - baseline) / 1024,
        "tostring_s": tostring,
        "c14n_sha256_s": c14n,
        "fromstring_s": fromstring,
        "deepcopy_s": deepcopy,
        "cleanup_s": cleanup,
        "entity_bytes": statistics.mean(len(b) for b in as_bytes),
    }


def run_trials(path: Path, cert_file: str, trials: int) -> list[dict[str, float]]:
    results = []
    for _ in range(trials):
        done = subprocess.run(
            [sys.executable, __file__, "--measure", str(path), cert_file],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(f"measuring failed: {done.stderr.strip().splitlines()[-1]}")
        results.append(json.loads(done.stdout))
    return results


def report(results: list[dict[str, float]]) -> None:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in results)

    first = results[0]
    print(
        f"verify_metadata ({len(results)} trials, fresh process each; median, "
        f"min-max):\n"
        f"  {first['entities']:,} entities, {first['bytes'] / 1024 / 1024:.1f} MiB\n"
        f"  wall {med('verify_s'):.2f} s "
        f"({min(r['verify_s'] for r in results):.2f}-"
        f"{max(r['verify_s'] for r in results):.2f}), CPU {med('verify_cpu_s'):.2f} s\n"
        f"  RSS before {med('baseline_mib'):.0f} MiB (interpreter, libraries and "
        f"the document's bytes), peak {med('peak_mib'):.0f} MiB, verified tree "
        f"+{med('tree_mib'):.0f} MiB"
    )
    per = 1e6 / first["entities"]
    print(
        "splitting the verified tree per entity:\n"
        f"  etree.tostring      {med('tostring_s'):.2f} s "
        f"({med('tostring_s') * per:.0f} us/entity, "
        f"{first['entity_bytes']:,.0f} bytes each, namespaces declared)\n"
        f"  exclusive c14n + SHA-256 {med('c14n_sha256_s'):.2f} s (a digest per "
        "entity that ignores the aggregate's namespace layout)\n"
        f"  etree.fromstring    {med('fromstring_s'):.2f} s (parsing those back)\n"
        f"  copy.deepcopy       {med('deepcopy_s'):.2f} s "
        f"({med('deepcopy_s') * per:.0f} us/entity) + cleanup_namespaces "
        f"{med('cleanup_s'):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reference", choices=("id", "whole"), default="id")
    parser.add_argument(
        "--c14n", choices=("exclusive", "inclusive"), default="exclusive"
    )
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--measure", nargs=2, metavar=("PATH", "CERT"))
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    print(
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    path, cert_file = build(args)
    if args.trials:
        report(run_trials(path, cert_file, args.trials))


if __name__ == "__main__":
    main()
