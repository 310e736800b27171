"""Two-step verification: a TOTP authenticator (RFC 6238) and recovery codes.

Every user may turn it on from Akaun saya; the admin console will require
it of admin roles through one predicate, :func:`has_second_factor`.

The algorithm is what every authenticator app reads: HMAC-SHA-1, 6 digits,
30-second steps (RFC 6238 over RFC 4226's truncation; :func:`hotp` is
checked against both RFCs' test vectors). A code is accepted for the
current step and one step either side (a phone's clock a little off), and
only for a step later than the last one accepted: each code is good once,
even within its 30 seconds (the check and the new step are one conditional
``UPDATE``, so two requests racing with one code cannot both pass).

Secrets are 160 bits from :mod:`secrets`, stored sealed with AES-256-GCM
under a key derived from ``idp.hmac_key`` (HKDF, its own label) and bound to
the user's id, so a database dump alone reveals none and a sealed secret
copied to another row does not open. Changing ``idp.hmac_key`` makes every
authenticator unreadable: its owners would have to be helped to turn the
second factor off and on again.

Recovery codes: ten per user, 12 characters of Crockford's base32 (60 bits),
shown once, stored as HMAC-SHA256 under another key derived from
``idp.hmac_key``; each is used once, by the same kind of conditional
``UPDATE``. Throttling is the caller's: the sign-in service counts a wrong
code exactly as a wrong password (``login.identifier``), so the million
codes cannot be walked.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import hmac
import os
import re
import secrets
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, func, select, update
from zope.interface import implementer

from idp.db import utcnow
from idp.models import RecoveryCode, TotpCredential, User
from idp.services import mail
from idp.services.interfaces import IAuditLog, IOutbox, ITwoFactorService

STEP_SECONDS = 30
DIGITS = 6
# Steps accepted either side of the current one.
DRIFT = 1
SECRET_BYTES = 20
RECOVERY_CODE_COUNT = 10
RECOVERY_CODE_LENGTH = 12
# Crockford's base32: no I, L, O or U, so nothing is misread; reading
# forgives the usual confusions (o for 0, i and l for 1).
RECOVERY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_RECOVERY_READ = str.maketrans({"o": "0", "i": "1", "l": "1"})
_SEPARATORS = re.compile(r"[\s\-]+")
# A secret shown for enrolment but never confirmed is replaced after this.
PENDING_LIFETIME = dt.timedelta(hours=1)
ISSUER = "idMe"
# The default actor of an audited change: the user themself.
_OWNER = object()


class Verdict(enum.StrEnum):
    """What a code typed at sign-in turned out to be."""

    TOTP = "totp"
    RECOVERY = "recovery"
    WRONG = "wrong"

    @property
    def ok(self) -> bool:
        return self is not Verdict.WRONG


class AlreadyOn(Exception):
    """The user's second factor is already on: enrolment cannot start again."""


@dataclass(frozen=True)
class Enrolment:
    """A secret waiting for its first code: what the setup page shows."""

    secret: str  # base32, as authenticator apps take it by hand
    uri: str  # the otpauth:// URI the QR code holds

    @property
    def groups(self) -> list[str]:
        """The secret in groups of four, for typing by hand."""
        return [self.secret[i : i + 4] for i in range(0, len(self.secret), 4)]


def hotp(
    key: bytes, counter: int, digits: int = DIGITS, algorithm: str = "sha1"
) -> str:
    """RFC 4226's HOTP value of ``counter`` under ``key``, ``digits`` long."""
    digest = hmac.new(key, struct.pack(">Q", counter), algorithm).digest()
    offset = digest[-1] & 0x0F
    (number,) = struct.unpack(">I", digest[offset : offset + 4])
    return str((number & 0x7FFFFFFF) % 10**digits).zfill(digits)


def step_of(moment: dt.datetime) -> int:
    """The RFC 6238 time step ``moment`` falls in (T0 = the Unix epoch)."""
    return int(moment.timestamp()) // STEP_SECONDS


def provisioning_uri(secret: str, account: str, issuer: str = ISSUER) -> str:
    """The ``otpauth://totp/`` URI of Google Authenticator's key URI format."""
    label = quote(f"{issuer}:{account}", safe="@:")
    query = urlencode(
        {
            "secret": secret,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_SECONDS,
        }
    )
    return f"otpauth://totp/{label}?{query}"


def read_code(text: str | None) -> str | None:
    """The six digits of an authenticator code as typed, or None.

    Spaces and dashes are dropped ("123 456" is how apps show it).
    """
    code = _SEPARATORS.sub("", text or "")
    return code if len(code) == DIGITS and code.isascii() and code.isdigit() else None


def read_recovery_code(text: str | None) -> str | None:
    """A recovery code as typed, normalised, or None if it cannot be one."""
    code = _SEPARATORS.sub("", (text or "").lower()).translate(_RECOVERY_READ)
    if len(code) != RECOVERY_CODE_LENGTH or not code.isascii():
        return None
    return code if all(c in RECOVERY_ALPHABET for c in code) else None


def show_recovery_code(code: str) -> str:
    """``abcd-efgh-jkmn``: a code as the page shows it."""
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def _derive(secret: str, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(
        secret.encode()
    )


class SecretBox:
    """Seals TOTP secrets with AES-256-GCM, each bound to its user's id."""

    VERSION = "v1"

    def __init__(self, secret: str) -> None:
        self._aead = AESGCM(_derive(secret, b"idp totp secret v1"))

    def _aad(self, user_id: uuid.UUID) -> bytes:
        return f"{self.VERSION}:{user_id}".encode()

    def seal(self, user_id: uuid.UUID, key: bytes) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, key, self._aad(user_id))
        return f"{self.VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, user_id: uuid.UUID, text: str) -> bytes | None:
        """The key sealed in ``text`` for ``user_id``; None if it does not open."""
        version, _, payload = text.partition(".")
        if version != self.VERSION:
            return None
        try:
            raw = base64.urlsafe_b64decode(payload.encode())
            return self._aead.decrypt(raw[:12], raw[12:], self._aad(user_id))
        except (ValueError, InvalidTag):
            return None


def recovery_code_key(secret: str) -> bytes:
    """The HMAC key recovery codes are stored under, derived from ``idp.hmac_key``."""
    return _derive(secret, b"idp recovery code v1")


def has_second_factor(dbsession, user_id: uuid.UUID) -> bool:
    """True if the user has a confirmed second factor: the one predicate.

    The admin console asks this before any admin role takes effect.
    """
    return (
        dbsession.scalar(
            select(func.count())
            .select_from(TotpCredential)
            .where(
                TotpCredential.user_id == user_id,
                TotpCredential.confirmed_at.is_not(None),
            )
        )
        > 0
    )


def clock_of(request) -> Callable[[], dt.datetime]:
    """The request's clock: the real one, or a test's frozen one.

    The test seam is the WSGI environ's ``idp.clock`` (as ``idp.dbsession``):
    no HTTP header can set an environ key with a dot in it.
    """
    return request.environ.get("idp.clock", utcnow)


@implementer(ITwoFactorService)
class TwoFactorService:
    def __init__(
        self,
        dbsession,
        *,
        box: SecretBox,
        code_key: bytes,
        audit,
        outbox,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.dbsession = dbsession
        self.box = box
        self.code_key = code_key
        self.audit = audit
        self.outbox = outbox
        self.clock = clock

    @classmethod
    def create_service(cls, context, request) -> TwoFactorService:
        registry = request.registry
        return cls(
            request.dbsession,
            box=registry["idp.two_factor.box"],
            code_key=registry["idp.two_factor.code_key"],
            audit=request.service(IAuditLog),
            outbox=request.service(IOutbox),
            clock=clock_of(request),
        )

    # Reading
    def _credential(self, user: User) -> TotpCredential | None:
        return self.dbsession.get(TotpCredential, user.id, populate_existing=True)

    def enabled(self, user: User) -> bool:
        return has_second_factor(self.dbsession, user.id)

    def recovery_codes_left(self, user: User) -> int:
        return self.dbsession.scalar(
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        )

    # Enrolment
    def begin(self, user: User) -> Enrolment:
        credential = self._credential(user)
        now = self.clock()
        if credential is not None and credential.confirmed_at is not None:
            raise AlreadyOn()
        if credential is not None and credential.created_at > now - PENDING_LIFETIME:
            key = self.box.open(user.id, credential.secret)
            if key is not None:
                return self._enrolment(user, key)
        key = secrets.token_bytes(SECRET_BYTES)
        if credential is None:
            credential = TotpCredential(user_id=user.id)
            self.dbsession.add(credential)
        credential.secret = self.box.seal(user.id, key)
        credential.created_at = now
        credential.last_step = None
        self.dbsession.flush()
        return self._enrolment(user, key)

    def _enrolment(self, user: User, key: bytes) -> Enrolment:
        secret = base64.b32encode(key).decode().rstrip("=")
        return Enrolment(secret=secret, uri=provisioning_uri(secret, user.email))

    def pending(self, user: User) -> Enrolment | None:
        credential = self._credential(user)
        if credential is None or credential.confirmed_at is not None:
            return None
        if credential.created_at <= self.clock() - PENDING_LIFETIME:
            return None
        key = self.box.open(user.id, credential.secret)
        return None if key is None else self._enrolment(user, key)

    def confirm(
        self, user: User, code: str, *, client_address=None
    ) -> list[str] | None:
        """Turn the pending authenticator on if ``code`` is right.

        Returns its recovery codes, or None (wrong code, nothing pending).
        """
        credential = self._credential(user)
        if credential is None or credential.confirmed_at is not None:
            return None
        step = self._matching_step(user, credential, code)
        if step is None:
            return None
        # Conditional on the very secret checked: a setup restarted in
        # another tab meanwhile (a new secret) is not confirmed by this code.
        done = self.dbsession.execute(
            update(TotpCredential)
            .where(
                TotpCredential.user_id == user.id,
                TotpCredential.confirmed_at.is_(None),
                TotpCredential.secret == credential.secret,
            )
            .values(confirmed_at=self.clock(), last_step=step)
            .execution_options(synchronize_session=False)
        )
        if done.rowcount != 1:
            return None
        codes = self._new_recovery_codes(user)
        self._audit("two_step.enabled", user, client_address)
        mail.two_step_enabled(self.outbox, user, changed_at=self.clock())
        return codes

    # Checking
    def _matching_step(self, user: User, credential: TotpCredential, code: str):
        """The step within the drift whose code is ``code``, else None."""
        typed = read_code(code)
        key = self.box.open(user.id, credential.secret)
        if typed is None or key is None:
            return None
        now = step_of(self.clock())
        matched = None
        # Every candidate is compared, in constant time, whichever matches.
        for step in range(now - DRIFT, now + DRIFT + 1):
            if hmac.compare_digest(hotp(key, step), typed):
                matched = step
        return matched

    def verify(self, user: User, code: str) -> Verdict:
        """Check an authenticator code or a recovery code, using it up if right."""
        if read_code(code) is not None:
            return self._verify_totp(user, code)
        recovery = read_recovery_code(code)
        if recovery is not None and self._use_recovery_code(user, recovery):
            return Verdict.RECOVERY
        return Verdict.WRONG

    def _verify_totp(self, user: User, code: str) -> Verdict:
        credential = self._credential(user)
        if credential is None or credential.confirmed_at is None:
            return Verdict.WRONG
        step = self._matching_step(user, credential, code)
        if step is None:
            return Verdict.WRONG
        accepted = self.dbsession.execute(
            update(TotpCredential)
            .where(
                TotpCredential.user_id == user.id,
                TotpCredential.confirmed_at.is_not(None),
                (TotpCredential.last_step.is_(None))
                | (TotpCredential.last_step < step),
            )
            .values(last_step=step)
            .execution_options(synchronize_session=False)
        )
        return Verdict.TOTP if accepted.rowcount == 1 else Verdict.WRONG

    def _hash_code(self, user: User, code: str) -> str:
        message = f"{user.id}:{code}".encode()
        return hmac.new(self.code_key, message, hashlib.sha256).hexdigest()

    def _use_recovery_code(self, user: User, code: str) -> bool:
        if not self.enabled(user):
            return False
        used = self.dbsession.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.user_id == user.id,
                RecoveryCode.code_hash == self._hash_code(user, code),
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=self.clock())
            .execution_options(synchronize_session=False)
        )
        if used.rowcount != 1:
            return False
        mail.recovery_code_used(
            self.outbox,
            user,
            used_at=self.clock(),
            remaining=self.recovery_codes_left(user),
        )
        return True

    # Changes
    def _new_recovery_codes(self, user: User) -> list[str]:
        self.dbsession.execute(
            delete(RecoveryCode).where(RecoveryCode.user_id == user.id)
        )
        codes = [
            "".join(
                secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_CODE_LENGTH)
            )
            for _ in range(RECOVERY_CODE_COUNT)
        ]
        now = self.clock()
        self.dbsession.add_all(
            RecoveryCode(
                user_id=user.id, code_hash=self._hash_code(user, c), created_at=now
            )
            for c in codes
        )
        self.dbsession.flush()
        return [show_recovery_code(c) for c in codes]

    def regenerate(self, user: User, *, client_address=None) -> list[str]:
        if not self.enabled(user):
            raise ValueError("the second factor is off")
        codes = self._new_recovery_codes(user)
        self._audit("two_step.recovery_codes_replaced", user, client_address)
        mail.recovery_codes_replaced(self.outbox, user, changed_at=self.clock())
        return codes

    def disable(
        self,
        user: User,
        *,
        how: str = "account",
        client_address=None,
        actor_user_id=None,
    ) -> bool:
        was_on = self.enabled(user)
        self.dbsession.execute(
            delete(RecoveryCode).where(RecoveryCode.user_id == user.id)
        )
        self.dbsession.execute(
            delete(TotpCredential).where(TotpCredential.user_id == user.id)
        )
        if not was_on:
            return False
        self._audit(
            "two_step.disabled",
            user,
            client_address,
            actor_user_id=_OWNER if how == "account" else actor_user_id,
            detail={"how": how},
        )
        mail.two_step_disabled(
            self.outbox, user, changed_at=self.clock(), by_helpdesk=how != "account"
        )
        return True

    def _audit(self, event, user, client_address, *, actor_user_id=_OWNER, detail=None):
        """Record ``event`` about ``user``, by the user unless ``actor_user_id``
        says who (None: an operator at ``idp-admin``)."""
        self.audit.record(
            event,
            subject_user_id=user.id,
            actor_user_id=user.id if actor_user_id is _OWNER else actor_user_id,
            client_address=client_address,
            detail=detail,
        )


def includeme(config) -> None:
    secret = config.get_settings()["idp.hmac_key"]
    config.registry["idp.two_factor.box"] = SecretBox(secret)
    config.registry["idp.two_factor.code_key"] = recovery_code_key(secret)
    config.register_service_factory(TwoFactorService.create_service, ITwoFactorService)
