"""Signing and verification throughput: in-process xmlsec versus the xmlsec1 binary.

Signs a realistic SAML Response (an Assertion with ten attributes, about
4 KB once signed; only the Response carries a signature) with an RSA-3072 key
N times through ``idp.saml.crypto.XmlsecBackend`` (libxmlsec in-process) and
through pysaml2's default ``CryptoBackendXmlSec1`` (one ``xmlsec1`` process
per operation, plus the ``xmlsec1 --version`` probes pysaml2 makes on every
call), then verifies the signed Response the same number of times with each.

Usage::

    .venv/bin/python bench/bench_signing.py [N_IN_PROCESS [N_SUBPROCESS]]

Defaults: 200 in-process iterations, 50 subprocess iterations.  Not a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from saml2 import saml, samlp
from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_PERSISTENT
from saml2.sigver import CryptoBackendXmlSec1, pre_signature_part
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from idp.saml.crypto import XmlsecBackend
from idp.saml.keys import make_pem_pair, write_private_key

RESPONSE = "urn:oasis:names:tc:SAML:2.0:protocol:Response"
RESPONSE_ID = "_bench-response-6f1c2d0e9a7b4c3d8e5f"
ASSERTION_ID = "_bench-assertion-0a9b8c7d6e5f4a3b2c1d"
IDP = "https://idp.example.edu.my/idp/shibboleth"
SP = "https://lms.example.edu.my/shibboleth"
ACS = "https://lms.example.edu.my/Shibboleth.sso/SAML2/POST"
INSTANT = "2025-01-15T08:30:00Z"

ATTRIBUTES = [
    ("urn:oid:0.9.2342.19200300.100.1.1", "uid", ["alice.tan"]),
    ("urn:oid:0.9.2342.19200300.100.1.3", "mail", ["alice.tan@example.edu.my"]),
    ("urn:oid:2.5.4.42", "givenName", ["Alice"]),
    ("urn:oid:2.5.4.4", "sn", ["Tan"]),
    ("urn:oid:2.5.4.3", "cn", ["Alice Tan Mei Ling"]),
    ("urn:oid:2.16.840.1.113730.3.1.241", "displayName", ["Alice Tan"]),
    (
        "urn:oid:1.3.6.1.4.1.5923.1.1.1.1",
        "eduPersonAffiliation",
        ["student", "member"],
    ),
    (
        "urn:oid:1.3.6.1.4.1.5923.1.1.1.6",
        "eduPersonPrincipalName",
        ["alice.tan@example.edu.my"],
    ),
    ("urn:oid:2.5.4.10", "o", ["Example University Malaysia"]),
    ("urn:oid:2.5.4.11", "ou", ["Faculty of Computer Science"]),
]


def make_key_pair(directory: Path) -> tuple[str, str, str]:
    """RSA-3072 key (0600) and self-signed certificate; returns paths and cert body."""
    key_pem, cert_pem = make_pem_pair("idme bench signer", key_size=3072, valid_days=1)
    key_file = directory / "bench.key"
    write_private_key(key_file, key_pem)
    cert_file = directory / "bench.crt"
    cert_file.write_bytes(cert_pem)
    body = "".join(cert_pem.decode("ascii").splitlines()[1:-1])
    return str(key_file), str(cert_file), body


def make_response(cert_body: str) -> str:
    """An unsigned Response with pysaml2's signature template for itself."""
    issuer = saml.Issuer(text=IDP, format=saml.NAMEID_FORMAT_ENTITY)
    subject = saml.Subject(
        name_id=saml.NameID(
            format=NAMEID_FORMAT_PERSISTENT,
            name_qualifier=IDP,
            sp_name_qualifier=SP,
            text="c3f1a9e0-5b7d-4e21-9a6c-2f8d0b4e7a13",
        ),
        subject_confirmation=[
            saml.SubjectConfirmation(
                method=saml.SCM_BEARER,
                subject_confirmation_data=saml.SubjectConfirmationData(
                    in_response_to="_req-4b2e8f1a9c7d",
                    not_on_or_after="2025-01-15T08:35:00Z",
                    recipient=ACS,
                ),
            )
        ],
    )
    attributes = [
        saml.Attribute(
            name=oid,
            friendly_name=friendly,
            name_format=NAME_FORMAT_URI,
            attribute_value=[saml.AttributeValue(text=value) for value in values],
        )
        for oid, friendly, values in ATTRIBUTES
    ]
    assertion = saml.Assertion(
        id=ASSERTION_ID,
        version="2.0",
        issue_instant=INSTANT,
        issuer=saml.Issuer(text=IDP, format=saml.NAMEID_FORMAT_ENTITY),
        subject=subject,
        conditions=saml.Conditions(
            not_before="2025-01-15T08:29:30Z",
            not_on_or_after="2025-01-15T08:35:00Z",
            audience_restriction=[
                saml.AudienceRestriction(audience=[saml.Audience(text=SP)])
            ],
        ),
        authn_statement=[
            saml.AuthnStatement(
                authn_instant=INSTANT,
                session_index="_session-7e3f9a1c",
                authn_context=saml.AuthnContext(
                    authn_context_class_ref=saml.AuthnContextClassRef(
                        text=saml.AUTHN_PASSWORD_PROTECTED
                    )
                ),
            )
        ],
        attribute_statement=[saml.AttributeStatement(attribute=attributes)],
    )
    response = samlp.Response(
        id=RESPONSE_ID,
        version="2.0",
        issue_instant=INSTANT,
        destination=ACS,
        in_response_to="_req-4b2e8f1a9c7d",
        issuer=issuer,
        status=samlp.Status(status_code=samlp.StatusCode(value=samlp.STATUS_SUCCESS)),
        assertion=assertion,
    )
    response.signature = pre_signature_part(
        RESPONSE_ID, cert_body, 1, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256
    )
    return str(response)


def measure(label: str, operation: Callable[[], object], iterations: int) -> float:
    operation()  # warm-up: key cache, imports, page cache
    start = time.perf_counter()
    for _ in range(iterations):
        operation()
    elapsed = time.perf_counter() - start
    per_op_ms = elapsed / iterations * 1000
    print(
        f"  {label:<34} {iterations:>5} ops  {iterations / elapsed:>9.1f} ops/s"
        f"  {per_op_ms:>8.3f} ms/op"
    )
    return per_op_ms


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    for line in lines:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("in_process", nargs="?", type=int, default=200)
    parser.add_argument("subprocess", nargs="?", type=int, default=50)
    args = parser.parse_args(argv)

    binary = shutil.which("xmlsec1")
    ours = XmlsecBackend()
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs)")
    print(f"Python {platform.python_version()}, libxmlsec (bindings) {ours.version}")

    with tempfile.TemporaryDirectory(prefix="idme-bench-") as tmp:
        key_file, cert_file, cert_body = make_key_pair(Path(tmp))
        template = make_response(cert_body)
        signed = ours.sign_statement(template, RESPONSE, key_file, RESPONSE_ID)
        print(
            f"Response: {len(template.encode())} bytes unsigned template, "
            f"{len(signed.encode())} bytes signed (RSA-3072, RSA-SHA256, "
            f"{len(ATTRIBUTES)} attributes)"
        )

        def measure_backend(label, backend, iterations):
            """Time signing, then verification, of the same Response."""
            print("Signing:")
            sign = measure(
                label,
                lambda: backend.sign_statement(
                    template, RESPONSE, key_file, RESPONSE_ID
                ),
                iterations,
            )
            print("Verification:")
            verify = measure(
                label,
                lambda: backend.validate_signature(
                    signed, cert_file, "pem", RESPONSE, RESPONSE_ID
                ),
                iterations,
            )
            return sign, verify

        sign_ours, verify_ours = measure_backend(
            "in-process (XmlsecBackend)", ours, args.in_process
        )

        if binary is None:
            print("xmlsec1 binary not found: subprocess numbers skipped")
            return 0
        theirs = CryptoBackendXmlSec1(binary)
        print(f"xmlsec1 binary: {binary} {theirs.version}")
        signed_by_binary = theirs.sign_statement(
            template, RESPONSE, key_file, RESPONSE_ID
        )
        # Cross-check before timing: each verifies what the other signed.
        assert ours.validate_signature(
            signed_by_binary, cert_file, "pem", RESPONSE, RESPONSE_ID
        )
        assert theirs.validate_signature(
            signed, cert_file, "pem", RESPONSE, RESPONSE_ID
        )
        sign_theirs, verify_theirs = measure_backend(
            "subprocess (CryptoBackendXmlSec1)", theirs, args.subprocess
        )
        print(
            f"Speed-up: signing x{sign_theirs / sign_ours:.0f}, "
            f"verification x{verify_theirs / verify_ours:.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
