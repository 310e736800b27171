"""How the IdP refuses a SAML message, and the status codes it answers with.

:class:`SamlRefused` is raised wherever a message fails a check; the views
turn it into a bilingual page and, once :class:`Reply` says where the
request's verified ACS is, a signed SAML error Response carrying its
``saml_status``. The status codes of saml-core 3.2.2.2 that the IdP sends
live here, top-level and second-level alike.
"""

from __future__ import annotations

from dataclasses import dataclass

# Top-level status codes.
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
STATUS_REQUESTER = "urn:oasis:names:tc:SAML:2.0:status:Requester"
STATUS_RESPONDER = "urn:oasis:names:tc:SAML:2.0:status:Responder"
# Second-level status codes.
STATUS_NO_PASSIVE = "urn:oasis:names:tc:SAML:2.0:status:NoPassive"
STATUS_NO_AUTHN_CONTEXT = "urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext"
STATUS_INVALID_NAMEID_POLICY = "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy"
STATUS_PARTIAL_LOGOUT = "urn:oasis:names:tc:SAML:2.0:status:PartialLogout"
STATUS_UNKNOWN_PRINCIPAL = "urn:oasis:names:tc:SAML:2.0:status:UnknownPrincipal"


@dataclass(frozen=True)
class Reply:
    """Where a SAML error Response may go: the request's validated ACS."""

    sp_id: int
    entity_id: str
    acs_url: str
    in_response_to: str
    relay_state: str | None


class SamlRefused(Exception):
    """A SAML message the IdP will not act on.

    ``code`` is stable (it names the page and the log line), ``status`` the
    HTTP status of the page, ``detail`` a one-line reason for the log only.
    ``reply`` is set once the ACS is trusted; ``saml_status`` (top-level and
    second-level status codes) says what the error Response carries.
    """

    def __init__(
        self,
        code: str,
        detail: str = "",
        *,
        status: int = 400,
        reply: Reply | None = None,
        saml_status: tuple[str, str | None] = (STATUS_REQUESTER, None),
    ) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.status = status
        self.reply = reply
        self.saml_status = saml_status

    def with_reply(self, reply: Reply) -> SamlRefused:
        self.reply = reply
        return self
