"""Golden Responses: what ``idp.saml.response`` sends, in a comparable form.

The cases below were first recorded from the builder that went through
pysaml2's object model (``Server._authn_response`` and ``_response``); the
template builder must send the same elements, attributes, namespace
prefixes and text. A recorded file is the inclusive canonical form (C14N
1.0: prefixes and where namespaces are declared are kept, attribute order
is not) with what differs on every call replaced by a placeholder: IDs and
the References to them (``ID1``, ``ID2``... in document order), the times
of the call, digests, signature values, the certificate and ciphertext.
:func:`normalised` checks those values' shape and relations before
replacing them (IDs as pysaml2 made them, every NotOnOrAfter exactly the
assertion's IssueInstant plus the lifetime), so the placeholders hide
nothing that could be wrong.

To record again (only when the Response is meant to change)::

    PYTHONPATH=. .venv/bin/python -m tests.response_golden
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from idp.models import ServiceProvider
from idp.saml import keys as keystore
from idp.saml.crypto import XmlsecBackend
from idp.saml.errors import (
    STATUS_INVALID_NAMEID_POLICY,
    STATUS_NO_AUTHN_CONTEXT,
    STATUS_NO_PASSIVE,
    STATUS_REQUESTER,
    STATUS_RESPONDER,
)
from idp.saml.sp_metadata import parse_sp_metadata
from idp.saml.xml import DS_NS, SAML_NS, SAMLP_NS, XENC_NS
from idp.settings import parse_settings
from tests.app import TEST_HOST, base_settings
from tests.saml_metadata import SP_ENTITY_ID, make_sp_metadata, sp_key_files

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "responses"
SP_ACS = "https://sp.example.org/acs"
REQUEST_ID = "id-request-0001"
AUTHN_INSTANT = dt.datetime(2026, 12, 4, 8, 15, 30, tzinfo=dt.UTC)
SESSION_INDEX = "_" + "5e" * 20
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
AC_PPT = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
AC_OURS = "https://idp.test/saml/ac/password-security-image"
ENCRYPTING_SP = "https://enc.example.org/sp"

# User data with everything XML escapes, and characters outside the BMP.
TRICKY = "Siti <b>&amp; \"Nur\" 'Aini']]> \U0001d54f\U0001f600 é"
ALL_ATTRIBUTES = {
    "uid": ["6c1a1e8e-4d0b-8c4e-9d3e-1b2c3d4e5f60"],
    "displayName": [TRICKY],
    "mail": ["siti.aini@contoh.edu.my"],
    "mobile": ["+60123456789"],
    "employeeType": ["educator"],
    "o": ["SK Taman <Melati> & Co"],
    "preferredLanguage": ["ms"],
    "isMemberOf": ["guru", "pentadbir&<x>"],
    "schacPersonalUniqueID": ["urn:schac:personalUniqueID:my:NIC:080512140001"],
    "subject-id": ["abcdefgh234567@idp.test"],
    "pairwise-id": ["qrstuvwx234567@idp.test"],
}
ID_SHAPE = re.compile(r"^id-[A-Za-z0-9]{17}$")
_TIME = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Case:
    """One success Response: the SP's policy and what the request asked."""

    name: str
    name_id_format: str = PERSISTENT
    name_id: str = "pQ3-persistent_value"
    attributes: dict[str, list[str]] = field(default_factory=dict)
    in_response_to: str | None = REQUEST_ID
    sign_response: bool = True
    sign_assertion: bool = True
    encrypt: bool = False
    context_class: str = AC_PPT

    def sp(self) -> ServiceProvider:
        return ServiceProvider(
            entity_id=ENCRYPTING_SP if self.encrypt else SP_ENTITY_ID,
            name_id_format=self.name_id_format,
            attributes_released=sorted(self.attributes),
            sign_response=self.sign_response,
            sign_assertion=self.sign_assertion,
            encrypt_assertion=self.encrypt,
            encryption_method=None,
            global_uid=False,
        )

    @property
    def acs_url(self) -> str:
        return "https://enc.example.org/acs" if self.encrypt else SP_ACS


CASES = (
    Case(
        "persistent-attributes",
        attributes={
            k: ALL_ATTRIBUTES[k] for k in ("uid", "displayName", "mail", "isMemberOf")
        },
    ),
    Case("persistent-no-attributes"),
    Case(
        "transient",
        name_id_format=TRANSIENT,
        name_id="_" + "ab" * 20,
        attributes={"uid": ALL_ATTRIBUTES["uid"]},
        context_class=AC_OURS,
    ),
    Case(
        "email-all-attributes",
        name_id_format=EMAIL,
        name_id="siti.aini@contoh.edu.my",
        attributes=dict(ALL_ATTRIBUTES),
    ),
    Case("idp-initiated", in_response_to=None, attributes={"mail": ["a@b.my"]}),
    Case("assertion-signed-only", sign_response=False),
    Case("response-signed-only", sign_assertion=False),
    Case("encrypted", encrypt=True, attributes={"displayName": [TRICKY]}),
    Case("encrypted-response-signed-only", encrypt=True, sign_assertion=False),
    Case("encrypted-idp-initiated", encrypt=True, in_response_to=None),
)


@dataclass(frozen=True)
class ErrorCase:
    name: str
    status: tuple
    message: str | None = None
    in_response_to: str | None = REQUEST_ID


ERROR_CASES = (
    ErrorCase("no-passive", (STATUS_RESPONDER, STATUS_NO_PASSIVE)),
    ErrorCase(
        "no-authn-context",
        (STATUS_RESPONDER, STATUS_NO_AUTHN_CONTEXT),
        message='cannot <satisfy> & "exact" \U0001f600',
    ),
    ErrorCase(
        "invalid-name-id-policy",
        (STATUS_RESPONDER, STATUS_INVALID_NAMEID_POLICY),
        in_response_to=None,
    ),
    ErrorCase("requester-only", (STATUS_REQUESTER, None)),
    ErrorCase("no-top-level", (None, None), message="m"),
)


class World:
    """The IdP's settings, key pair and (pysaml2) server, and the SPs' metadata."""

    def __init__(self, settings: dict, keypair: keystore.KeyPair) -> None:
        from idp.saml.server import build_server

        self.settings = settings
        self.keypair = keypair
        # Neither asks for signed assertions: each case's policy decides
        # (idp.saml.registry.signing).
        self.plain = make_sp_metadata(want_assertions_signed=False)
        self.encrypting = make_sp_metadata(
            ENCRYPTING_SP, encryption=True, want_assertions_signed=False
        )
        self.plain_metadata = parse_sp_metadata(self.plain)
        self.encrypting_metadata = parse_sp_metadata(self.encrypting)
        self.server = build_server(
            settings,
            keypair,
            [
                (SP_ENTITY_ID, self.plain.decode()),
                (ENCRYPTING_SP, self.encrypting.decode()),
            ],
        )

    def build(self, case: Case) -> str | bytes:
        from idp.saml import response as responses

        metadata = self.encrypting_metadata if case.encrypt else self.plain_metadata
        return responses.build(
            self.server,
            sp=case.sp(),
            metadata=metadata,
            acs_url=case.acs_url,
            in_response_to=case.in_response_to,
            subject=responses.Subject(case.name_id_format, case.name_id),
            attributes=case.attributes,
            context_class=case.context_class,
            authn_instant=AUTHN_INSTANT,
            session_index=SESSION_INDEX,
            settings=self.settings,
        )

    def build_error(self, case: ErrorCase) -> str | bytes:
        from idp.saml import response as responses

        return responses.build_error(
            self.server,
            acs_url=SP_ACS,
            in_response_to=case.in_response_to,
            status=case.status,
            message=case.message,
        )

    def response(self, case: Case | ErrorCase) -> bytes:
        """The Response for ``case``, as the bytes sent."""
        xml = (
            self.build_error(case) if isinstance(case, ErrorCase) else self.build(case)
        )
        return xml.encode("utf-8") if isinstance(xml, str) else xml


def _time(value: str | None) -> dt.datetime:
    assert value is not None
    return dt.datetime.strptime(value, _TIME).replace(tzinfo=dt.UTC)


def verify_signatures(
    xml: bytes, keypair: keystore.KeyPair, only: str | None = None
) -> int:
    """Verify every ds:Signature of ``xml`` (of ``only`` elements, a tag, if
    given) with the IdP's certificate alone; return how many there were."""
    backend = XmlsecBackend()
    root = etree.fromstring(xml)
    count = 0
    for signature in root.iter(f"{{{DS_NS}}}Signature"):
        signed = signature.getparent()
        if only is not None and signed.tag != only:
            continue
        node = f"{etree.QName(signed).namespace}:{etree.QName(signed).localname}"
        assert backend.validate_signature(
            xml, str(keypair.cert_file), "pem", node, signed.get("ID")
        )
        count += 1
    return count


def decrypted(xml: bytes) -> bytes:
    key_file, _ = sp_key_files("sp-encryption")
    return XmlsecBackend().decrypt(xml, key_file).encode("utf-8")


def normalised(xml: bytes, lifetime: int) -> str:
    """``xml`` in canonical form, its per-call values checked and replaced."""
    root = etree.fromstring(xml)
    ids: dict[str, str] = {}
    for element in root.iter(etree.Element):
        value = element.get("ID")
        if value is not None:
            assert ID_SHAPE.match(value), value
            assert value not in ids, f"duplicate ID {value}"
            ids[value] = f"ID{len(ids) + 1}"
            element.set("ID", ids[value])
    for reference in root.iter(f"{{{DS_NS}}}Reference"):
        reference.set("URI", "#" + ids[reference.get("URI")[1:]])

    issued = _time(root.get("IssueInstant"))
    assert abs(issued - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    root.set("IssueInstant", "ISSUED")
    for assertion in root.iter(f"{{{SAML_NS}}}Assertion"):
        assertion_issued = _time(assertion.get("IssueInstant"))
        assert abs(assertion_issued - issued) <= dt.timedelta(seconds=1)
        assertion.set("IssueInstant", "ISSUED")
        until = assertion_issued + dt.timedelta(seconds=lifetime)
        holders = list(
            assertion.iter(
                f"{{{SAML_NS}}}Conditions", f"{{{SAML_NS}}}SubjectConfirmationData"
            )
        )
        assert len(holders) == 2
        for element in holders:
            assert _time(element.get("NotOnOrAfter")) == until
            element.set("NotOnOrAfter", "UNTIL")
        for conditions in assertion.iter(f"{{{SAML_NS}}}Conditions"):
            not_before = _time(conditions.get("NotBefore"))
            assert assertion_issued - dt.timedelta(seconds=1) <= not_before
            assert not_before <= assertion_issued
            conditions.set("NotBefore", "NOT_BEFORE")

    for tag, placeholder in (
        (f"{{{DS_NS}}}DigestValue", "DIGEST"),
        (f"{{{DS_NS}}}SignatureValue", "SIGNATURE"),
        (f"{{{DS_NS}}}X509Certificate", "CERTIFICATE"),
        (f"{{{XENC_NS}}}CipherValue", "CIPHER"),
    ):
        for element in root.iter(tag):
            assert (element.text or "").strip()
            element.text = placeholder
    return etree.tostring(root, method="c14n").decode("utf-8")


def record(case: Case | ErrorCase, world: World) -> str:
    """What :data:`GOLDEN_DIR` holds for ``case``: the form compared."""
    lifetime = world.settings["idp.saml.assertion_lifetime"]
    xml = world.response(case)
    root = etree.fromstring(xml)
    assert root.tag == f"{{{SAMLP_NS}}}Response"
    verify_signatures(xml, world.keypair)
    text = normalised(xml, lifetime)
    if isinstance(case, Case) and case.encrypt:
        clear = decrypted(xml)
        # (The Response's signature covers the ciphertext, not this.)
        verify_signatures(clear, world.keypair, only=f"{{{SAML_NS}}}Assertion")
        text += "\n---- decrypted ----\n" + normalised(clear, lifetime)
    return text + "\n"


def golden_path(case: Case | ErrorCase) -> Path:
    kind = "error" if isinstance(case, ErrorCase) else "success"
    return GOLDEN_DIR / f"{kind}-{case.name}.xml"


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="idp-golden-"))
    keypair = keystore.generate(tmp / "certs", TEST_HOST, key_size=2048)
    world = World(parse_settings(base_settings(tmp)), keypair)
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for case in (*CASES, *ERROR_CASES):
        golden_path(case).write_text(record(case, world), encoding="utf-8")
        print(golden_path(case))


if __name__ == "__main__":
    main()
