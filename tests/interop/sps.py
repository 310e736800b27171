"""Two independent SAML service providers behind one small interface.

:class:`Pysaml2SP` is pysaml2's ``Saml2Client``; :class:`OneLoginSP` is
python3-saml (OneLogin) in strict mode. The IdP is itself built on pysaml2,
so a mistake it shares with pysaml2 would pass a pysaml2 SP; OneLogin parses
and validates everything its own way and catches it. Each SP validates with
its library's own checks (signatures, audience, destination, InResponseTo,
time, decryption); the harness adds a check only where a library leaves one
out, and says so there.

Everything runs in-process. Messages for the IdP come back as paths relative
to ``https://idp.test`` (WebTest takes paths); messages the IdP sends a
browser to at the SP are handed to the SP as full URLs.
"""

from __future__ import annotations

import base64
import copy
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from lxml import etree
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.authn_request import OneLogin_Saml2_Authn_Request
from onelogin.saml2.constants import OneLogin_Saml2_Constants as OL
from onelogin.saml2.errors import OneLogin_Saml2_ValidationError
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from onelogin.saml2.logout_request import OneLogin_Saml2_Logout_Request
from onelogin.saml2.logout_response import OneLogin_Saml2_Logout_Response
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from onelogin.saml2.utils import OneLogin_Saml2_Utils
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import entity_descriptor, metadata_tostring_fix
from saml2.response import StatusError
from saml2.saml import NameID
from saml2.sigver import verify_redirect_signature
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from idp.saml.crypto import install_security_context
from idp.saml.keys import make_pem_pair

PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"

SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
NO_PASSIVE = "urn:oasis:names:tc:SAML:2.0:status:NoPassive"
PARTIAL_LOGOUT = "urn:oasis:names:tc:SAML:2.0:status:PartialLogout"

SAMLP_NS = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML_NS = "urn:oasis:names:tc:SAML:2.0:assertion"
MD_NS = "urn:oasis:names:tc:SAML:2.0:metadata"
_STATUS_CODE = f"{{{SAMLP_NS}}}StatusCode"
_ATTRIBUTE = f"{{{SAML_NS}}}Attribute"
_ATTRIBUTE_VALUE = f"{{{SAML_NS}}}AttributeValue"
_NAME_ID_FORMAT = f"{{{MD_NS}}}NameIDFormat"

# Clocks are the same process; a minute absorbs second rounding only.
CLOCK_SKEW_SECONDS = 60


class SPRefused(Exception):
    """The SP's library refused a message from the IdP; the text says why."""


@dataclass(frozen=True)
class Login:
    """What an SP learnt from one SAML Response.

    ``status`` is the most specific status code (the second-level one when
    the IdP sent one, e.g. NoPassive under Responder); ``status_codes`` is
    the whole chain, top level first. For an error Response the subject
    fields are None and ``attributes`` is empty.
    """

    name_id: str | None
    name_id_format: str | None
    session_index: str | None
    attributes: dict[str, list[str]]
    status: str
    encrypted: bool
    status_codes: tuple[str, ...] = ()


def _xml(data: bytes | str) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    return etree.fromstring(data, parser)


def status_codes(root: etree._Element) -> tuple[str, ...]:
    """The StatusCode chain of a SAML response, top level first."""
    codes = []
    node = root.find(f"{{{SAMLP_NS}}}Status")
    while node is not None:
        node = node.find(_STATUS_CODE)
        if node is not None:
            codes.append(node.get("Value", ""))
    return tuple(codes)


def attributes_of(assertion_holder: etree._Element) -> dict[str, list[str]]:
    """Attribute values by FriendlyName (or Name when there is none)."""
    found: dict[str, list[str]] = {}
    for attribute in assertion_holder.iter(_ATTRIBUTE):
        key = attribute.get("FriendlyName") or attribute.get("Name")
        values = found.setdefault(key, [])
        values.extend(value.text or "" for value in attribute.iter(_ATTRIBUTE_VALUE))
    return found


def is_encrypted(root: etree._Element) -> bool:
    return root.find(f"{{{SAML_NS}}}EncryptedAssertion") is not None


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


class _SP:
    """State and checks both SPs share: identity, keys, endpoints, sessions."""

    library = ""

    def __init__(
        self,
        entity_id: str,
        idp_metadata: bytes,
        *,
        sign_requests: bool = False,
        encryption: bool = True,
        name_id_formats: tuple[str, ...] = (PERSISTENT,),
        want_assertions_signed: bool = True,
    ) -> None:
        host = urlsplit(entity_id).hostname
        if not host:
            raise ValueError(f"entity ID {entity_id!r} has no host")
        self.entity_id = entity_id
        self.host = host
        self.acs_url = f"https://{host}/acs"
        self.slo_url = f"https://{host}/slo"
        self.sign_requests = sign_requests
        self.encryption = encryption
        self.name_id_formats = tuple(name_id_formats)
        self.want_assertions_signed = want_assertions_signed
        self.idp_metadata = idp_metadata
        self.idp_entity_id = _xml(idp_metadata).get("entityID")
        self.key_pem, self.cert_pem = make_pem_pair(host, key_size=2048)
        # NameID -> session indexes of the logins this SP accepted, so a
        # LogoutRequest for someone it never saw is refused.
        self.sessions: dict[str, set[str | None]] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.entity_id}>"

    def _refused(self, what: str, reason: object) -> SPRefused:
        return SPRefused(f"{self.library} SP {self.entity_id} refused {what}: {reason}")

    def _idp_path(self, url: str) -> str:
        """``https://idp.test/x?y`` -> ``/x?y``, checking it goes to the IdP."""
        parts = urlsplit(url)
        idp = urlsplit(self.idp_entity_id)
        if (parts.scheme, parts.netloc) != (idp.scheme, idp.netloc):
            raise ValueError(f"{url} is not at the IdP {idp.netloc}")
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def _at_slo(self, url: str, kind: str) -> dict[str, str]:
        """The query of a redirect to our SLO URL, which must be signed."""
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}{parts.path}" != self.slo_url:
            raise self._refused(kind, f"it arrived at {url}, not at {self.slo_url}")
        query = _query(url)
        if kind not in query:
            raise self._refused(kind, f"no {kind} parameter in {url}")
        if not query.get("Signature") or not query.get("SigAlg"):
            raise self._refused(kind, "it is not signed (no Signature/SigAlg)")
        return query

    def _remember(self, login: Login) -> Login:
        if login.name_id is not None:
            self.sessions.setdefault(login.name_id, set()).add(login.session_index)
        return login

    def _end_session(self, name_id: str | None, session_indexes: list[str]) -> None:
        """Refuse a LogoutRequest for a NameID or session this SP never had."""
        known = self.sessions.get(name_id or "")
        if known is None:
            raise self._refused(
                "the LogoutRequest", f"NameID {name_id!r} never logged in here"
            )
        if session_indexes and not known & set(session_indexes):
            raise self._refused(
                "the LogoutRequest",
                f"SessionIndex {session_indexes} is not one of {sorted(map(str, known))}",
            )
        del self.sessions[name_id]


class Pysaml2SP(_SP):
    """An SP on pysaml2's ``Saml2Client``, signing in-process (no xmlsec1)."""

    library = "pysaml2"

    def __init__(self, entity_id: str, idp_metadata: bytes, **options) -> None:
        super().__init__(entity_id, idp_metadata, **options)
        directory = Path(tempfile.mkdtemp(prefix="interop-sp-"))
        weakref.finalize(self, shutil.rmtree, directory, True)
        key_file, cert_file = directory / "sp.key", directory / "sp.crt"
        key_file.write_bytes(self.key_pem)
        cert_file.write_bytes(self.cert_pem)
        conf: dict = {
            "entityid": entity_id,
            "key_file": str(key_file),
            "cert_file": str(cert_file),
            "metadata": {"inline": [idp_metadata.decode("utf-8")]},
            "accepted_time_diff": CLOCK_SKEW_SECONDS,
            "allow_unknown_attributes": True,
            # Keeps pysaml2 from looking for the xmlsec1 binary; the real
            # context is installed below.
            "crypto_backend": "XMLSecurity",
            "service": {
                "sp": {
                    "endpoints": {
                        "assertion_consumer_service": [
                            (self.acs_url, BINDING_HTTP_POST)
                        ],
                        "single_logout_service": [
                            (self.slo_url, BINDING_HTTP_REDIRECT)
                        ],
                    },
                    "authn_requests_signed": self.sign_requests,
                    "logout_requests_signed": True,
                    "logout_responses_signed": True,
                    "want_assertions_signed": self.want_assertions_signed,
                    "want_response_signed": True,
                    "allow_unsolicited": True,
                    "name_id_format": list(self.name_id_formats),
                    # pysaml2 sends AllowCreate="false" by default, which
                    # (saml-core 3.4.1.1) forbids a first persistent NameID.
                    "name_id_format_allow_create": True,
                    "signing_algorithm": SIG_RSA_SHA256,
                    "digest_algorithm": DIGEST_SHA256,
                }
            },
        }
        if self.encryption:
            conf["encryption_keypairs"] = [
                {"key_file": str(key_file), "cert_file": str(cert_file)}
            ]
        self._conf = conf
        self.client = self._client(idp_metadata)

    def _client(self, idp_metadata: bytes) -> Saml2Client:
        config = SPConfig()
        config.load({**self._conf, "metadata": {"inline": [idp_metadata.decode()]}})
        client = Saml2Client(config=config)
        install_security_context(client)
        return client

    def refresh(self, idp_metadata: bytes) -> None:
        """Load the IdP's metadata again, as an SP's periodic refresh does."""
        self.idp_metadata = idp_metadata
        self.client = self._client(idp_metadata)

    # -- metadata and requests -------------------------------------------------

    def metadata(self) -> bytes:
        descriptor = entity_descriptor(self.client.config)
        xml = metadata_tostring_fix(
            descriptor, {"md": MD_NS, "ds": "http://www.w3.org/2000/09/xmldsig#"}
        )
        return xml.encode("utf-8") if isinstance(xml, str) else xml

    def _authn_request(self, binding, force_authn, is_passive, name_id_format, sign):
        destination = self.client.sso_location(self.idp_entity_id, binding)
        extra = {}
        if force_authn:
            extra["force_authn"] = "true"
        if is_passive:
            extra["is_passive"] = "true"
        request_id, request = self.client.create_authn_request(
            destination,
            binding=BINDING_HTTP_POST,  # the binding of the Response
            nameid_format=name_id_format,
            sign=sign,
            sign_alg=SIG_RSA_SHA256,
            digest_alg=DIGEST_SHA256,
            **extra,
        )
        return destination, request_id, str(request)

    def redirect_request(
        self,
        *,
        relay_state: str | None = None,
        force_authn: bool = False,
        is_passive: bool = False,
        name_id_format: str | None = None,
        sign: bool | None = None,
    ) -> tuple[str, str]:
        """An AuthnRequest over HTTP-Redirect: (path and query, request ID).

        ``name_id_format`` None sends no NameIDPolicy; ``sign`` defaults to
        the SP's ``sign_requests`` and signs the query (SigAlg, Signature).
        """
        sign = self.sign_requests if sign is None else sign
        destination, request_id, xml = self._authn_request(
            BINDING_HTTP_REDIRECT, force_authn, is_passive, name_id_format, False
        )
        info = self.client.apply_binding(
            BINDING_HTTP_REDIRECT,
            xml,
            destination,
            relay_state or "",
            sign=sign,
            sigalg=SIG_RSA_SHA256,
        )
        return self._idp_path(dict(info["headers"])["Location"]), request_id

    def post_request(
        self,
        *,
        relay_state: str | None = None,
        force_authn: bool = False,
        is_passive: bool = False,
        name_id_format: str | None = None,
        sign: bool | None = None,
    ) -> tuple[dict[str, str], str]:
        """An AuthnRequest for HTTP-POST: (form fields, request ID).

        A signed one carries an enveloped XML signature.
        """
        sign = self.sign_requests if sign is None else sign
        _, request_id, xml = self._authn_request(
            BINDING_HTTP_POST, force_authn, is_passive, name_id_format, sign
        )
        fields = {"SAMLRequest": base64.b64encode(xml.encode("utf-8")).decode()}
        if relay_state is not None:
            fields["RelayState"] = relay_state
        return fields, request_id

    # -- SSO response ----------------------------------------------------------

    def consume(self, fields: dict[str, str], request_id: str | None) -> Login:
        """Validate a Response posted to the ACS; unsolicited if no request_id."""
        saml_response = fields["SAMLResponse"]
        root = _xml(base64.b64decode(saml_response))
        self.client.allow_unsolicited = request_id is None
        outstanding = {request_id: "/"} if request_id else {}
        try:
            response = self.client.parse_authn_request_response(
                saml_response, BINDING_HTTP_POST, outstanding=outstanding
            )
        except StatusError:
            # Raised after the signature and InResponseTo checks passed.
            codes = status_codes(root)
            return Login(None, None, None, {}, codes[-1], is_encrypted(root), codes)
        except Exception as exc:
            raise self._refused("the Response", repr(exc)) from exc
        if response is None:
            raise self._refused("the Response", "pysaml2 returned no response")
        assertion = response.assertion
        if assertion is None:
            # _parse_response ignores a False from verify() (wrong Destination,
            # IssueInstant, InResponseTo): the assertion is then never read.
            raise self._refused("the Response", "it did not verify (see the log)")
        name_id = response.name_id
        authn = assertion.authn_statement
        attributes: dict[str, list[str]] = {}
        for statement in assertion.attribute_statement:
            for attribute in statement.attribute:
                key = attribute.friendly_name or attribute.name
                attributes.setdefault(key, []).extend(
                    value.text or "" for value in attribute.attribute_value
                )
        codes = status_codes(root)
        return self._remember(
            Login(
                name_id=name_id.text if name_id is not None else None,
                name_id_format=name_id.format if name_id is not None else None,
                session_index=authn[0].session_index if authn else None,
                attributes=attributes,
                status=codes[-1],
                encrypted=is_encrypted(root),
                status_codes=codes,
            )
        )

    # -- single logout ---------------------------------------------------------

    def _check_redirect_signature(self, query: dict[str, str], kind: str) -> None:
        # pysaml2 checks a Redirect signature only where an IdP's config asks
        # (want_authn_requests_signed) and never on a LogoutResponse: check it
        # with pysaml2's own verifier against the IdP's metadata keys.
        message = {
            key: query[key]
            for key in (kind, "RelayState", "SigAlg", "Signature")
            if key in query
        }
        certs = self.client.metadata.certs(self.idp_entity_id, "idpsso", "signing")
        backend = self.client.sec.sec_backend
        try:
            verified = any(
                verify_redirect_signature(message, backend, cert) for _, cert in certs
            )
        except Exception as exc:
            raise self._refused(kind, f"signature check failed: {exc!r}") from exc
        if not verified:
            raise self._refused(kind, "the Redirect signature does not verify")

    def logout_request(
        self,
        name_id: str,
        name_id_format: str | None,
        session_index: str | None,
        *,
        sign: bool = True,
    ) -> tuple[str, str]:
        """A LogoutRequest over HTTP-Redirect: (path and query, request ID)."""
        destination = self.client.metadata.single_logout_service(
            self.idp_entity_id, BINDING_HTTP_REDIRECT, "idpsso"
        )[0]["location"]
        request_id, request = self.client.create_logout_request(
            destination,
            self.idp_entity_id,
            name_id=NameID(text=name_id, format=name_id_format),
            session_indexes=[session_index] if session_index else None,
            sign=False,
        )
        info = self.client.apply_binding(
            BINDING_HTTP_REDIRECT,
            str(request),
            destination,
            "",
            sign=sign,
            sigalg=SIG_RSA_SHA256,
        )
        return self._idp_path(dict(info["headers"])["Location"]), request_id

    def answer_logout_request(self, url: str) -> str:
        """Take the IdP's LogoutRequest at our SLO URL; the LogoutResponse path."""
        query = self._at_slo(url, "SAMLRequest")
        self._check_redirect_signature(query, "SAMLRequest")
        try:
            request = self.client.parse_logout_request(
                query["SAMLRequest"],
                BINDING_HTTP_REDIRECT,
                relay_state=query.get("RelayState"),
                sigalg=query["SigAlg"],
                signature=query["Signature"],
            )
        except Exception as exc:
            raise self._refused("the LogoutRequest", repr(exc)) from exc
        message = request.message
        issuer = message.issuer.text if message.issuer is not None else None
        if issuer != self.idp_entity_id:
            raise self._refused("the LogoutRequest", f"issuer {issuer!r}")
        # _parse_request drops the verdict of issue_instant_ok().
        if not request.issue_instant_ok():
            raise self._refused("the LogoutRequest", "IssueInstant out of range")
        self._end_session(
            message.name_id.text if message.name_id is not None else None,
            [index.text for index in message.session_index],
        )
        response = self.client.create_logout_response(
            message,
            bindings=[BINDING_HTTP_REDIRECT],
            sign=False,
        )
        destination = self.client.response_args(message, [BINDING_HTTP_REDIRECT])[
            "destination"
        ]
        info = self.client.apply_binding(
            BINDING_HTTP_REDIRECT,
            str(response),
            destination,
            query.get("RelayState", ""),
            response=True,
            sign=True,
            sigalg=SIG_RSA_SHA256,
        )
        return self._idp_path(dict(info["headers"])["Location"])

    def check_logout_response(self, url: str, request_id: str) -> str:
        """Validate the IdP's LogoutResponse at our SLO URL; its status."""
        query = self._at_slo(url, "SAMLResponse")
        self._check_redirect_signature(query, "SAMLResponse")
        root = _xml(
            self.client.unravel(
                query["SAMLResponse"], BINDING_HTTP_REDIRECT, "logout_response"
            )
        )
        try:
            response = self.client.parse_logout_request_response(
                query["SAMLResponse"], BINDING_HTTP_REDIRECT
            )
        except StatusError:
            # pysaml2 raises for a top-level error status only after the
            # destination and time checks passed.
            response = None
        except Exception as exc:
            raise self._refused("the LogoutResponse", repr(exc)) from exc
        else:
            # _parse_response ignores what verify() says about Destination
            # and IssueInstant; ask again.
            if response is None or not response.verify():
                raise self._refused(
                    "the LogoutResponse", "wrong Destination or IssueInstant"
                )
        issuer = root.findtext(f"{{{SAML_NS}}}Issuer")
        if issuer != self.idp_entity_id:
            raise self._refused("the LogoutResponse", f"issuer {issuer!r}")
        # pysaml2 compares InResponseTo only with a request ID it was given.
        if root.get("InResponseTo") != request_id:
            raise self._refused(
                "the LogoutResponse",
                f"InResponseTo {root.get('InResponseTo')!r} is not {request_id!r}",
            )
        return status_codes(root)[-1]


class OneLoginSP(_SP):
    """An SP on python3-saml (OneLogin), strict, with hand-built request data."""

    library = "python3-saml"

    def __init__(self, entity_id: str, idp_metadata: bytes, **options) -> None:
        super().__init__(entity_id, idp_metadata, **options)
        self.refresh(idp_metadata)

    def refresh(self, idp_metadata: bytes) -> None:
        """Load the IdP's metadata again, as an SP's periodic refresh does."""
        self.idp_metadata = idp_metadata
        parse = OneLogin_Saml2_IdPMetadataParser.parse
        self._idp = parse(
            idp_metadata,
            required_sso_binding=OL.BINDING_HTTP_REDIRECT,
            required_slo_binding=OL.BINDING_HTTP_REDIRECT,
        )["idp"]
        self._post_sso = parse(idp_metadata, required_sso_binding=OL.BINDING_HTTP_POST)[
            "idp"
        ]["singleSignOnService"]
        self.settings = self._settings()

    def _settings(
        self,
        *,
        sso: dict | None = None,
        name_id_format: str | None = None,
    ) -> OneLogin_Saml2_Settings:
        """The SP's settings; ``sso`` replaces the IdP's SSO endpoint.

        Request signing is decided per call (``add_request_signature`` /
        ``add_sign``); ``authnRequestsSigned`` here only goes into metadata.
        """
        idp = copy.deepcopy(self._idp)
        if sso is not None:
            idp["singleSignOnService"] = dict(sso)
        data = {
            "strict": True,
            "debug": False,
            "sp": {
                "entityId": self.entity_id,
                "assertionConsumerService": {
                    "url": self.acs_url,
                    "binding": OL.BINDING_HTTP_POST,
                },
                "singleLogoutService": {
                    "url": self.slo_url,
                    "binding": OL.BINDING_HTTP_REDIRECT,
                },
                "NameIDFormat": name_id_format or self.name_id_formats[0],
                "x509cert": self.cert_pem.decode("ascii"),
                "privateKey": self.key_pem.decode("ascii"),
            },
            "idp": idp,
            "security": {
                "authnRequestsSigned": self.sign_requests,
                "logoutRequestSigned": True,
                "logoutResponseSigned": True,
                "wantMessagesSigned": True,
                "wantAssertionsSigned": self.want_assertions_signed,
                "wantAssertionsEncrypted": self.encryption,
                "wantNameIdEncrypted": False,
                # SAML lets an assertion carry no attributes (an SP policy
                # releasing none); OneLogin refuses that by default.
                "wantAttributeStatement": False,
                "signatureAlgorithm": OL.RSA_SHA256,
                "digestAlgorithm": OL.SHA256,
                "rejectDeprecatedAlgorithm": True,
            },
        }
        return OneLogin_Saml2_Settings(data)

    def _request_data(self, url: str, post_data: dict | None = None) -> dict:
        parts = urlsplit(url)
        return {
            "https": "on" if parts.scheme == "https" else "off",
            "http_host": parts.netloc,
            "script_name": parts.path,
            "get_data": _query(url),
            "post_data": dict(post_data or {}),
            # Verify Redirect signatures over the query as sent (bindings
            # 3.4.4.1), not over a re-encoding of it.
            "query_string": parts.query,
            "validate_signature_from_qs": True,
        }

    # -- metadata and requests -------------------------------------------------

    def metadata(self) -> bytes:
        xml = self.settings.get_sp_metadata()
        errors = self.settings.validate_metadata(xml)
        if errors:
            raise ValueError(f"python3-saml made invalid metadata: {errors}")
        # OneLogin's builder writes one NameIDFormat; list all this SP takes.
        root = _xml(xml)
        first = next(root.iter(_NAME_ID_FORMAT))
        for name_id_format in reversed(self.name_id_formats[1:]):
            extra = etree.Element(_NAME_ID_FORMAT)
            extra.text = name_id_format
            first.addnext(extra)
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    def _authn_request(self, settings, force_authn, is_passive, name_id_format):
        return OneLogin_Saml2_Authn_Request(
            settings,
            force_authn=force_authn,
            is_passive=is_passive,
            set_nameid_policy=name_id_format is not None,
        )

    def redirect_request(
        self,
        *,
        relay_state: str | None = None,
        force_authn: bool = False,
        is_passive: bool = False,
        name_id_format: str | None = None,
        sign: bool | None = None,
    ) -> tuple[str, str]:
        """An AuthnRequest over HTTP-Redirect: (path and query, request ID).

        ``name_id_format`` None sends no NameIDPolicy; ``sign`` defaults to
        the SP's ``sign_requests`` and signs the query (SigAlg, Signature).
        """
        sign = self.sign_requests if sign is None else sign
        settings = self._settings(name_id_format=name_id_format)
        request = self._authn_request(settings, force_authn, is_passive, name_id_format)
        parameters = {"SAMLRequest": request.get_request()}
        if relay_state is not None:
            parameters["RelayState"] = relay_state
        if sign:
            auth = OneLogin_Saml2_Auth(self._request_data(self.acs_url), settings)
            auth.add_request_signature(parameters, OL.RSA_SHA256)
        url = OneLogin_Saml2_Utils.redirect(settings.get_idp_sso_url(), parameters)
        return self._idp_path(url), request.get_id()

    def post_request(
        self,
        *,
        relay_state: str | None = None,
        force_authn: bool = False,
        is_passive: bool = False,
        name_id_format: str | None = None,
        sign: bool | None = None,
    ) -> tuple[dict[str, str], str]:
        """An AuthnRequest for HTTP-POST: (form fields, request ID).

        A signed one carries an enveloped XML signature.
        """
        sign = self.sign_requests if sign is None else sign
        settings = self._settings(sso=self._post_sso, name_id_format=name_id_format)
        request = self._authn_request(settings, force_authn, is_passive, name_id_format)
        xml = request.get_xml()
        if sign:
            xml = OneLogin_Saml2_Utils.add_sign(
                xml,
                self.key_pem.decode("ascii"),
                self.cert_pem.decode("ascii"),
                sign_algorithm=OL.RSA_SHA256,
                digest_algorithm=OL.SHA256,
            )
        if isinstance(xml, str):
            xml = xml.encode("utf-8")
        fields = {"SAMLRequest": base64.b64encode(xml).decode("ascii")}
        if relay_state is not None:
            fields["RelayState"] = relay_state
        return fields, request.get_id()

    # -- SSO response ----------------------------------------------------------

    def consume(self, fields: dict[str, str], request_id: str | None) -> Login:
        """Validate a Response posted to the ACS; unsolicited if no request_id."""
        request_data = self._request_data(self.acs_url, fields)
        response = OneLogin_Saml2_Response(self.settings, fields["SAMLResponse"])
        try:
            response.is_valid(request_data, request_id, raise_exceptions=True)
        except OneLogin_Saml2_ValidationError as exc:
            if exc.code != OneLogin_Saml2_ValidationError.STATUS_CODE_IS_NOT_SUCCESS:
                raise self._refused("the Response", exc) from exc
            return self._error_login(response, request_data, request_id)
        except Exception as exc:
            raise self._refused("the Response", repr(exc)) from exc
        if request_id is not None and response.get_in_response_to() != request_id:
            # OneLogin compares InResponseTo only when the Response has one.
            raise self._refused(
                "the Response", f"InResponseTo {response.get_in_response_to()!r}"
            )
        document = response.get_xml_document()  # decrypted
        codes = status_codes(response.document)
        return self._remember(
            Login(
                name_id=response.get_nameid(),
                name_id_format=response.get_nameid_format(),
                session_index=response.get_session_index(),
                attributes=attributes_of(document),
                status=codes[-1],
                encrypted=bool(response.encrypted),
                status_codes=codes,
            )
        )

    def _error_login(self, response, request_data, request_id) -> Login:
        """An error Response, after the checks OneLogin skips for one.

        OneLogin stops at the status, before any signature check; a forged
        error must not pass, so check the Response signature, destination and
        InResponseTo here with OneLogin's own helpers.
        """
        root = response.document
        idp = self.settings.get_idp_data()
        certs = idp.get("x509certMulti", {}).get("signing")
        try:
            OneLogin_Saml2_Utils.validate_sign(
                root,
                self.settings.get_idp_cert(),
                xpath=OneLogin_Saml2_Utils.RESPONSE_SIGNATURE_XPATH,
                multicerts=certs,
                raise_exceptions=True,
            )
        except Exception as exc:
            raise self._refused("the error Response", f"signature: {exc}") from exc
        problems = []
        if root.get("Destination") != OneLogin_Saml2_Utils.get_self_url_no_query(
            request_data
        ):
            problems.append(f"Destination {root.get('Destination')!r}")
        if request_id is not None and root.get("InResponseTo") != request_id:
            problems.append(f"InResponseTo {root.get('InResponseTo')!r}")
        issuer = root.findtext(f"{{{SAML_NS}}}Issuer")
        if issuer != self.idp_entity_id:
            problems.append(f"issuer {issuer!r}")
        if problems:
            raise self._refused("the error Response", ", ".join(problems))
        codes = status_codes(root)
        return Login(None, None, None, {}, codes[-1], is_encrypted(root), codes)

    # -- single logout ---------------------------------------------------------

    def logout_request(
        self,
        name_id: str,
        name_id_format: str | None,
        session_index: str | None,
        *,
        sign: bool = True,
    ) -> tuple[str, str]:
        """A LogoutRequest over HTTP-Redirect: (path and query, request ID)."""
        settings = self.settings
        request = OneLogin_Saml2_Logout_Request(
            settings,
            name_id=name_id,
            session_index=session_index,
            name_id_format=name_id_format,
        )
        parameters = {"SAMLRequest": request.get_request()}
        if sign:
            auth = OneLogin_Saml2_Auth(self._request_data(self.slo_url), settings)
            auth.add_request_signature(parameters, OL.RSA_SHA256)
        url = OneLogin_Saml2_Utils.redirect(settings.get_idp_slo_url(), parameters)
        return self._idp_path(url), request.id

    def answer_logout_request(self, url: str) -> str:
        """Take the IdP's LogoutRequest at our SLO URL; the LogoutResponse path."""
        self._at_slo(url, "SAMLRequest")
        auth = OneLogin_Saml2_Auth(self._request_data(url), self.settings)
        try:
            answer = auth.process_slo(keep_local_session=True)
        except Exception as exc:
            raise self._refused("the LogoutRequest", repr(exc)) from exc
        if auth.get_errors():
            raise self._refused(
                "the LogoutRequest",
                f"{auth.get_errors()} {auth.get_last_error_reason()}",
            )
        xml = auth.get_last_request_xml()
        self._end_session(
            OneLogin_Saml2_Logout_Request.get_nameid(xml),
            OneLogin_Saml2_Logout_Request.get_session_indexes(xml),
        )
        return self._idp_path(answer)

    def check_logout_response(self, url: str, request_id: str) -> str:
        """Validate the IdP's LogoutResponse at our SLO URL; its status."""
        query = self._at_slo(url, "SAMLResponse")
        auth = OneLogin_Saml2_Auth(self._request_data(url), self.settings)
        try:
            auth.process_slo(keep_local_session=True, request_id=request_id)
        except Exception as exc:
            raise self._refused("the LogoutResponse", repr(exc)) from exc
        # A non-Success status is the one "error" that is an answer.
        if auth.get_errors() not in ([], ["logout_not_success"]):
            raise self._refused(
                "the LogoutResponse",
                f"{auth.get_errors()} {auth.get_last_error_reason()}",
            )
        response = OneLogin_Saml2_Logout_Response(self.settings, query["SAMLResponse"])
        # OneLogin compares InResponseTo only when the response has one.
        if response.get_in_response_to() != request_id:
            raise self._refused(
                "the LogoutResponse",
                f"InResponseTo {response.get_in_response_to()!r} is not {request_id!r}",
            )
        return status_codes(response.document)[-1]


SP_CLASSES = (Pysaml2SP, OneLoginSP)
