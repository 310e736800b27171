"""Importing and refreshing a 10,000-entity signed aggregate, as an operator does.

Takes the aggregate ``bench/make_aggregate.py`` builds (every SP with its own
key and host, signed by a federation key; cached under ``var/bench/``) and
runs the real ``idp-admin`` on a scratch copy of ``development.ini``, each
command in its own process, timing its wall clock and CPU time:

1. ``source add bench --file AGGREGATE --anchor FEDERATION.crt``: the first
   import (verify, split, check every entity as ``sp import`` does, insert);
2. ``source refresh bench`` of the same file: unchanged, recognised by its
   digest after the signature and validity checks;
3. ``source refresh bench`` of the aggregate re-signed with a later
   validUntil (what a federation publishes daily): every entity's copy
   changes only in its validity;
4. ``source refresh bench`` of the aggregate with every entity's ACS moved:
   every entity re-checked and its change held for approval.

The database is SQLite in a temporary folder, or ``--database-url`` (a
PostgreSQL URL whose database is emptied first). Usage::

    .venv/bin/python bench/bench_sources.py                  # 10,000 entities
    .venv/bin/python bench/bench_sources.py --entities 1000
    .venv/bin/python bench/bench_sources.py --aggregate XML KEY CERT

Not a test: the numbers depend on the machine and its load, which is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
IDP_ADMIN = Path(sys.executable).parent / "idp-admin"


def scratch_ini(folder: Path, database_url: str | None) -> Path:
    text = (ROOT / "development.ini").read_text()
    text = text.replace("%(here)s/var/idp.sqlite", str(folder / "idp.sqlite"))
    for name in ("certs", "metadata"):
        text = text.replace(f"%(here)s/{name}", str(folder / name))
    text = text.replace("%(here)s/var/mail", str(folder / "mail"))
    if database_url:
        text = text.replace(f"sqlite:///{folder / 'idp.sqlite'}", database_url)
    path = folder / "bench.ini"
    path.write_text(text)
    return path


def timed(*args) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stdout) of ``idp-admin ARGS``; exits on failure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        [str(IDP_ADMIN), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"idp-admin {' '.join(map(str, args[1:]))} failed: {result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.stdout


def variant(path: Path, key_file: str, cert_file: str, out: Path, **change) -> Path:
    """The aggregate re-signed after ``change``: ``valid_days`` or ``move_acs``."""
    from lxml import etree

    from tests.aggregates import sign_metadata

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    root = etree.parse(str(path), parser).getroot()
    days = change.get("valid_days", 12)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    root.set("validUntil", until.strftime("%Y-%m-%dT%H:%M:%SZ"))
    if change.get("move_acs"):
        tag = "{urn:oasis:names:tc:SAML:2.0:metadata}AssertionConsumerService"
        for acs in root.iter(tag):
            acs.set("Location", acs.get("Location") + "/moved")
    data = sign_metadata(
        etree.tostring(root, xml_declaration=True, encoding="UTF-8"),
        key_file,
        cert_file=cert_file,
    )
    out.write_bytes(data)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--database-url", help="PostgreSQL instead of SQLite")
    parser.add_argument(
        "--aggregate",
        nargs=3,
        metavar=("XML", "KEY", "CERT"),
        help="an aggregate already built, and the federation's key and certificate",
    )
    args = parser.parse_args()

    if args.aggregate:
        aggregate, key_file, cert_file = Path(args.aggregate[0]), *args.aggregate[1:]
    else:
        import make_aggregate

        build_args = argparse.Namespace(
            entities=args.entities,
            workers=os.cpu_count() or 1,
            reference="id",
            c14n="exclusive",
            rebuild=False,
        )
        aggregate, cert_file = make_aggregate.build(build_args)
        key_file, _cert = make_aggregate.federation_keys()
    print(
        f"machine: {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"aggregate {aggregate.stat().st_size / 1024 / 1024:.1f} MiB"
    )
    with tempfile.TemporaryDirectory(prefix="idp-bench-sources-") as tmp:
        folder = Path(tmp)
        ini = scratch_ini(folder, args.database_url)
        if args.database_url:
            from sqlalchemy import text

            from idp.db import make_engine

            engine = make_engine({"sqlalchemy.url": args.database_url})
            with engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
            engine.dispose()
        timed(ini, "db", "upgrade")
        current = folder / "federation.xml"
        current.write_bytes(aggregate.read_bytes())
        rows = []
        wall, cpu, out = timed(
            ini, "source", "add", "bench", "--file", current, "--anchor", cert_file
        )
        rows.append(("first import", wall, cpu, out.splitlines()[1]))
        wall, cpu, out = timed(ini, "source", "refresh", "bench")
        rows.append(("refresh, unchanged", wall, cpu, out.strip()))
        variant(aggregate, key_file, cert_file, current, valid_days=12)
        wall, cpu, out = timed(ini, "source", "refresh", "bench")
        rows.append(("refresh, new validUntil", wall, cpu, out.splitlines()[0]))
        variant(aggregate, key_file, cert_file, current, valid_days=11, move_acs=True)
        wall, cpu, out = timed(ini, "source", "refresh", "bench")
        rows.append(("refresh, every ACS moved", wall, cpu, out.splitlines()[0]))
    database = "PostgreSQL" if args.database_url else "SQLite"
    print(f"{database}; each a fresh idp-admin process")
    for name, wall, cpu, line in rows:
        print(f"  {name:26} {wall:6.1f} s wall, {cpu:6.1f} s CPU   {line}")


if __name__ == "__main__":
    main()
