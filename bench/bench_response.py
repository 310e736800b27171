"""The SSO Response alone: ``idp.saml.response.build()`` per call, in-process.

No app, no database, no HTTP: the call ``assertion_for`` makes once the
user, the SP and the NameID are known, for the cases of
``tests/response_golden.py`` that matter to throughput:

* *signed*: persistent NameID, four attributes, Response and Assertion
  signed (two RSA signatures);
* *signed + encrypted*: the same, the Assertion also encrypted
  (AES-256-GCM, key sent with RSA-OAEP) for an SP that publishes a key;
* *error*: a signed NoPassive Response (``build_error``);

and, for scale, one bare RSA PKCS#1 v1.5 SHA-256 signature through
``cryptography`` with the same key. The rows take turns in blocks (the
machine is shared and drifts), and each prints ms per call (mean, p50,
p99, and the mean of its fastest block: the least disturbed). The key is
RSA-2048 unless ``--key-size`` says otherwise.

Run it on another checkout (``PYTHONPATH=OTHER``) to compare two builders
in the same conditions::

    PYTHONPATH=. .venv/bin/python bench/bench_response.py [-n 2000] [--blocks 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

# Appended, so that PYTHONPATH (another checkout) comes first.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import idp  # noqa: E402
from idp.saml import keys as keystore  # noqa: E402
from idp.settings import parse_settings  # noqa: E402
from tests.app import TEST_HOST, base_settings  # noqa: E402
from tests.response_golden import (  # noqa: E402
    ALL_ATTRIBUTES,
    STATUS_NO_PASSIVE,
    STATUS_RESPONDER,
    Case,
    ErrorCase,
    World,
)

ATTRIBUTES = {
    name: ALL_ATTRIBUTES[name] for name in ("uid", "displayName", "mail", "isMemberOf")
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="calls per row")
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--key-size", type=int, default=2048)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="idp-bench-response-"))
    keypair = keystore.generate(tmp / "certs", TEST_HOST, key_size=args.key_size)
    world = World(parse_settings(base_settings(tmp)), keypair)
    private_key = serialization.load_pem_private_key(
        keypair.key_file.read_bytes(), None
    )
    message = b"x" * 64

    def rsa_sign() -> None:
        private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())

    signed = Case("signed", attributes=ATTRIBUTES)
    encrypted = Case("encrypted", attributes=ATTRIBUTES, encrypt=True)
    error = ErrorCase("error", (STATUS_RESPONDER, STATUS_NO_PASSIVE))
    rows = {
        "build(): signed": lambda: world.build(signed),
        "build(): signed + encrypted": lambda: world.build(encrypted),
        "build_error(): signed NoPassive": lambda: world.build_error(error),
        f"one RSA-{args.key_size} signature (cryptography)": rsa_sign,
    }
    for call in rows.values():
        for _ in range(args.warmup):
            call()
    times: dict[str, list[float]] = {label: [] for label in rows}
    blocks: dict[str, list[float]] = {label: [] for label in rows}
    per_block = max(1, args.n // args.blocks)
    for _ in range(args.blocks):
        for label, call in rows.items():
            block = time.perf_counter()
            for _ in range(per_block):
                start = time.perf_counter()
                call()
                times[label].append(time.perf_counter() - start)
            blocks[label].append((time.perf_counter() - block) / per_block)

    print(f"idp from {Path(idp.__file__).parent}")
    print(f"RSA-{args.key_size}, {per_block * args.blocks} calls per row")
    for label, values in times.items():
        ms = sorted(v * 1000 for v in values)
        print(
            f"{label:<44} mean {statistics.fmean(ms):6.3f} ms"
            f"  p50 {ms[len(ms) // 2]:6.3f}  p99 {ms[int(len(ms) * 0.99)]:6.3f}"
            f"  best block {min(blocks[label]) * 1000:6.3f}"
        )


if __name__ == "__main__":
    main()
