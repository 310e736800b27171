"""The self-hosted written captcha: challenges stored server-side, single use.

A challenge is a random token handed to the browser (a hidden form field and
the image and audio URLs). Its answer is derived from the token with a key
derived from ``idp.hmac_key``, so the database holds neither the token nor
the answer: only the token's SHA-256 and a keyed hash of the answer. A
challenge is consumed by its first check, right or wrong, and expires.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from sqlalchemy import delete, select, update
from zope.interface import implementer

from idp.db import utcnow
from idp.models import CaptchaChallenge
from idp.services import captcha_media
from idp.services.interfaces import ICaptchaService

# Expired challenges removed by each new one: enough to keep the table near
# (issue rate x lifetime) without ever making one request slow.
PURGE_BATCH = 20
TOKEN_BYTES = 32


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@implementer(ICaptchaService)
class ImageCaptcha:
    """Distorted digits in a PNG, spoken digits in a WAV, both from one token."""

    def __init__(
        self, dbsession, secret: str, *, enabled: bool, lifetime: int, clock=utcnow
    ) -> None:
        self.dbsession = dbsession
        self.enabled = enabled
        self.lifetime = dt.timedelta(seconds=lifetime)
        self.clock = clock
        self._key = hmac.new(secret.encode(), b"idp captcha v1", "sha256").digest()

    @classmethod
    def create_service(cls, context, request) -> ImageCaptcha:
        settings = request.registry.settings
        return cls(
            request.dbsession,
            settings["idp.hmac_key"],
            enabled=settings["captcha.enabled"],
            lifetime=settings["captcha.expires_seconds"],
        )

    def _mac(self, *parts: str) -> bytes:
        return hmac.new(self._key, "\0".join(parts).encode(), "sha256").digest()

    def answer(self, token: str) -> str:
        """The answer of the challenge ``token`` (what its media show)."""
        digest = self._mac("answer", token)
        number = int.from_bytes(digest[:8], "big")
        return "".join(
            captcha_media.ALPHABET[(number // 10**i) % 10]
            for i in range(captcha_media.LENGTH)
        )

    def new_challenge(self) -> str:
        now = self.clock()
        stale = (
            select(CaptchaChallenge.id)
            .where(CaptchaChallenge.expires_at < now)
            .limit(PURGE_BATCH)
            .with_for_update(skip_locked=True)
        )
        self.dbsession.execute(
            delete(CaptchaChallenge).where(CaptchaChallenge.id.in_(stale))
        )
        token = secrets.token_urlsafe(TOKEN_BYTES)
        self.dbsession.add(
            CaptchaChallenge(
                token_hash=_token_hash(token),
                answer_hash=self._mac("check", token, self.answer(token)).hex(),
                created_at=now,
                expires_at=now + self.lifetime,
            )
        )
        return token

    def _live(self, token: str) -> CaptchaChallenge | None:
        if not token or len(token) > 100:
            return None
        challenge = self.dbsession.scalars(
            select(CaptchaChallenge).where(
                CaptchaChallenge.token_hash == _token_hash(token)
            )
        ).one_or_none()
        if challenge is None or challenge.used_at is not None:
            return None
        if challenge.expires_at <= self.clock():
            return None
        return challenge

    def image(self, token: str) -> bytes | None:
        if self._live(token) is None:
            return None
        return captcha_media.render_image(self.answer(token), self._mac("seed", token))

    def audio(self, token: str, locale: str) -> bytes | None:
        if self._live(token) is None:
            return None
        return captcha_media.render_audio(
            self.answer(token), locale, self._mac("seed", token)
        )

    def check(self, token: str | None, answer: str | None) -> bool:
        if not self.enabled:
            return True
        if not token or len(token) > 100:
            return False
        now = self.clock()
        # One UPDATE both finds and consumes the challenge, so two requests
        # racing with the same token cannot both get a verdict.
        expected = self.dbsession.scalars(
            update(CaptchaChallenge)
            .where(
                CaptchaChallenge.token_hash == _token_hash(token),
                CaptchaChallenge.used_at.is_(None),
                CaptchaChallenge.expires_at > now,
            )
            .values(used_at=now)
            .returning(CaptchaChallenge.answer_hash)
            .execution_options(synchronize_session=False)
        ).one_or_none()
        if expected is None:
            return False
        given = "".join((answer or "").split())[:20]
        return hmac.compare_digest(
            self._mac("check", token, given), bytes.fromhex(expected)
        )


def includeme(config) -> None:
    config.register_service_factory(ImageCaptcha.create_service, ICaptchaService)
