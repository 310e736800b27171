"""The data model. Importing this package registers every table on Base."""

from idp.models.admin import AdminGrant, AdminRole
from idp.models.audit import AuditEvent
from idp.models.keys import MetadataFetch, SigningKey
from idp.models.outbox import OutboxMessage
from idp.models.role import Module, Role, role_modules, user_roles
from idp.models.saml_state import (
    LogoutFlow,
    LogoutLeg,
    PendingSamlRequest,
    SeenRequestId,
    SloHourlyCount,
)
from idp.models.session import IdpSession, SessionParticipant
from idp.models.source import MetadataSource, PendingChange, QuarantinedEntity
from idp.models.sp import (
    PersistentNameId,
    ServiceProvider,
    SpRegistryState,
    SsoHourlyCount,
)
from idp.models.throttle import NumberLock, ThrottleCounter
from idp.models.token import CaptchaChallenge, OneTimeToken
from idp.models.two_factor import RecoveryCode, TotpCredential
from idp.models.user import User

__all__ = [
    "AdminGrant",
    "AdminRole",
    "AuditEvent",
    "CaptchaChallenge",
    "IdpSession",
    "LogoutFlow",
    "LogoutLeg",
    "MetadataFetch",
    "MetadataSource",
    "Module",
    "NumberLock",
    "OneTimeToken",
    "OutboxMessage",
    "PendingChange",
    "PendingSamlRequest",
    "PersistentNameId",
    "QuarantinedEntity",
    "RecoveryCode",
    "Role",
    "SeenRequestId",
    "ServiceProvider",
    "SessionParticipant",
    "SigningKey",
    "SloHourlyCount",
    "SpRegistryState",
    "SsoHourlyCount",
    "ThrottleCounter",
    "TotpCredential",
    "User",
    "role_modules",
    "user_roles",
]
