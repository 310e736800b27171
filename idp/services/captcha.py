"""Captchas: the self-hosted written one by default, or a hosted service.

``captcha.backend = image`` (the default, and the only choice for a
deployment without outbound internet) is :class:`ImageCaptcha`, challenges
stored server-side and single use. ``recaptcha``, ``hcaptcha`` or
``turnstile`` is :class:`SiteVerifyCaptcha`, which asks the provider's
siteverify endpoint about the token its widget put in the form.

A challenge is a random token handed to the browser (a hidden form field and
the image and audio URLs). Its answer is derived from the token with a key
derived from ``idp.hmac_key``, so the database holds neither the token nor
the answer: only the token's SHA-256 and a keyed hash of the answer. A
challenge is consumed by its first check, right or wrong, and expires.

A challenge belongs to one form (its ``purpose``: ``login``, ``register``,
``reset``, ``reset.new``) and one session: the session keeps a random nonce
and the challenge a keyed hash of it. Answered from another session or on
another form it fails like a wrong answer, and is consumed (AUTH-24). A form
shown again in the same session gets the same live challenge back (its
token is kept in the session), so reloading a form writes no new row.

Issuing a challenge and fetching its picture or sound each count against
the ``captcha.address`` rate limit; past it they raise
:class:`CaptchaFlood`, a 429 page. The sound is rendered once per challenge
and kept in its row (AUTH-25).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlencode, urlsplit

from sqlalchemy import select, update
from zope.interface import implementer

from idp.db import utcnow
from idp.models import CaptchaChallenge
from idp.services import captcha_media
from idp.services.interfaces import ICaptchaService, IRateLimiter

log = logging.getLogger(__name__)

TOKEN_BYTES = 32
# "lookup" is the identifier step past its limits (AUTH-27); "login" the
# password step.
PURPOSES = frozenset({"lookup", "login", "register", "reset", "reset.new"})
LIMITER = "captcha.address"
# Session keys: the nonce challenges are bound to, and the live token per
# purpose.
SESSION_BINDING = "captcha.binding"
SESSION_TOKENS = "captcha.tokens"


class CaptchaFlood(Exception):
    """Too many challenges or media fetches from one address (AUTH-25)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@implementer(ICaptchaService)
class ImageCaptcha:
    """Distorted digits in a PNG, spoken digits in a WAV, both from one token."""

    kind = "image"
    widget = None
    csp: Mapping[str, tuple[str, ...]] = MappingProxyType({})

    def __init__(
        self,
        dbsession,
        secret: str,
        *,
        enabled: bool,
        lifetime: int,
        session=None,
        limiter=None,
        client_address: str | None = None,
        clock=utcnow,
        test_answers_dir: str = "",
    ) -> None:
        self.dbsession = dbsession
        # The browser tests' hook (refused by the settings outside them).
        self.test_answers_dir = Path(test_answers_dir) if test_answers_dir else None
        self.enabled = enabled
        self.lifetime = dt.timedelta(seconds=lifetime)
        self.clock = clock
        self._key = hmac.new(secret.encode(), b"idp captcha v1", "sha256").digest()
        # A callable giving the request's session, asked only when a
        # challenge is issued or checked: media fetches need no session.
        self._session = session
        self.limiter = limiter
        self.client_address = client_address

    @classmethod
    def create_service(cls, context, request) -> ImageCaptcha:
        settings = request.registry.settings
        return cls(
            request.dbsession,
            settings["idp.hmac_key"],
            enabled=settings["captcha.enabled"],
            lifetime=settings["captcha.expires_seconds"],
            session=lambda: request.session,
            limiter=request.service(IRateLimiter),
            client_address=request.client_addr,
            test_answers_dir=settings["captcha.test_answers_dir"],
        )

    def _count(self) -> None:
        """One hit on ``captcha.address``; CaptchaFlood past the limit."""
        if self.limiter is None:
            return
        decision = self.limiter.hit(LIMITER, self.client_address or "")
        if not decision.allowed:
            raise CaptchaFlood(decision.retry_after)

    def _binding(self, *, create: bool) -> str:
        """The keyed hash of this session's nonce ("" without a session)."""
        if self._session is None:
            return ""
        session = self._session()
        nonce = session.get(SESSION_BINDING)
        if not isinstance(nonce, str):
            if not create:
                return ""
            nonce = secrets.token_urlsafe(16)
            session[SESSION_BINDING] = nonce
        return self._mac("binding", nonce).hex()

    def _remember(self, purpose: str, token: str) -> None:
        if self._session is None:
            return
        session = self._session()
        tokens = session.get(SESSION_TOKENS)
        tokens = dict(tokens) if isinstance(tokens, dict) else {}
        tokens[purpose] = token
        session[SESSION_TOKENS] = tokens

    def _reusable(self, purpose: str, binding: str) -> str | None:
        """This session's live, unused token for ``purpose``, if any."""
        if self._session is None:
            return None
        tokens = self._session().get(SESSION_TOKENS)
        token = tokens.get(purpose) if isinstance(tokens, dict) else None
        if not isinstance(token, str):
            return None
        challenge = self._live(token)
        if challenge is None or challenge.purpose != purpose:
            return None
        # One about to expire would be refused before a person typed it.
        if challenge.expires_at - self.clock() < self.lifetime / 3:
            return None
        if not hmac.compare_digest(challenge.binding, binding):
            return None
        return token

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

    def new_challenge(self, purpose: str) -> str:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown captcha purpose {purpose!r}")
        self._count()
        binding = self._binding(create=True)
        token = self._reusable(purpose, binding)
        if token is not None:
            return token
        now = self.clock()
        # Expired challenges go in the background (idp.services.purge), not
        # in the request of whoever asks for a new one.
        token = secrets.token_urlsafe(TOKEN_BYTES)
        self.dbsession.add(
            CaptchaChallenge(
                token_hash=_token_hash(token),
                answer_hash=self._mac("check", token, self.answer(token)).hex(),
                purpose=purpose,
                binding=binding,
                created_at=now,
                expires_at=now + self.lifetime,
            )
        )
        self._remember(purpose, token)
        self._publish_for_tests(token)
        return token

    def _publish_for_tests(self, token: str) -> None:
        """The browser tests' hook: the answer, in a file named by the token's
        hash, so a test holding the page's token finds it and the directory
        holds no usable token. Settings refuse the hook outside those tests."""
        if self.test_answers_dir is not None:
            (self.test_answers_dir / _token_hash(token)).write_text(self.answer(token))

    def _live(self, token: str, *, lock: bool = False) -> CaptchaChallenge | None:
        if not token or len(token) > 100:
            return None
        query = select(CaptchaChallenge).where(
            CaptchaChallenge.token_hash == _token_hash(token)
        )
        if lock:
            query = query.with_for_update()
        challenge = self.dbsession.scalars(query).one_or_none()
        if challenge is None or challenge.used_at is not None:
            return None
        if challenge.expires_at <= self.clock():
            return None
        return challenge

    def image(self, token: str) -> bytes | None:
        self._count()
        if self._live(token) is None:
            return None
        return captcha_media.render_image(self.answer(token), self._mac("seed", token))

    def audio(self, token: str, locale: str) -> bytes | None:
        """The challenge's sound, rendered at the first fetch and kept.

        Rendered from a fresh random seed, so the bytes served again are
        the kept ones, not a second render. Asked in the other language
        (someone switched it), the sound is rendered again in that one.
        """
        self._count()
        # Locked, so two fetches racing for a new challenge's sound render it
        # once: the second waits and finds it kept.
        challenge = self._live(token, lock=True)
        if challenge is None:
            return None
        if challenge.audio is None or challenge.audio_locale != locale:
            challenge.audio = captcha_media.render_audio(
                self.answer(token), locale, secrets.token_bytes(16)
            )
            challenge.audio_locale = locale
        return challenge.audio

    def check(self, params, client_address: str | None = None, *, purpose: str) -> bool:
        if not self.enabled:
            return True
        return self.check_answer(
            params.get("captcha_token"), params.get("captcha_answer"), purpose
        )

    def check_answer(self, token: str | None, answer: str | None, purpose: str) -> bool:
        if not token or len(token) > 100:
            return False
        binding = self._binding(create=False)
        now = self.clock()
        # One UPDATE both finds and consumes the challenge, so two requests
        # racing with the same token cannot both get a verdict.
        expected = self.dbsession.execute(
            update(CaptchaChallenge)
            .where(
                CaptchaChallenge.token_hash == _token_hash(token),
                CaptchaChallenge.used_at.is_(None),
                CaptchaChallenge.expires_at > now,
            )
            .values(used_at=now, audio=None)
            .returning(
                CaptchaChallenge.answer_hash,
                CaptchaChallenge.purpose,
                CaptchaChallenge.binding,
            )
            .execution_options(synchronize_session=False)
        ).one_or_none()
        if expected is None:
            return False
        answer_hash, issued_for, issued_to = expected
        given = "".join((answer or "").split())[:20]
        # Every comparison is made, so a relayed challenge takes as long to
        # refuse as a wrong answer.
        right = hmac.compare_digest(
            self._mac("check", token, given), bytes.fromhex(answer_hash)
        )
        same_form = hmac.compare_digest(issued_for, purpose)
        same_session = bool(binding) and hmac.compare_digest(issued_to, binding)
        return right and same_form and same_session


@dataclass(frozen=True)
class Provider:
    """A hosted captcha: its widget, where to verify, what the CSP must allow."""

    script_url: str
    verify_url: str
    css_class: str
    response_field: str
    csp: dict[str, tuple[str, ...]]


PROVIDERS = {
    "recaptcha": Provider(
        script_url="https://www.google.com/recaptcha/api.js",
        verify_url="https://www.google.com/recaptcha/api/siteverify",
        css_class="g-recaptcha",
        response_field="g-recaptcha-response",
        csp={
            "script-src": (
                "https://www.google.com/recaptcha/",
                "https://www.gstatic.com/recaptcha/",
            ),
            "frame-src": ("https://www.google.com/recaptcha/",),
        },
    ),
    "hcaptcha": Provider(
        script_url="https://js.hcaptcha.com/1/api.js",
        verify_url="https://api.hcaptcha.com/siteverify",
        css_class="h-captcha",
        response_field="h-captcha-response",
        csp=dict.fromkeys(
            ("script-src", "frame-src", "style-src", "connect-src"),
            ("https://hcaptcha.com", "https://*.hcaptcha.com"),
        ),
    ),
    "turnstile": Provider(
        script_url="https://challenges.cloudflare.com/turnstile/v0/api.js",
        verify_url="https://challenges.cloudflare.com/turnstile/v0/siteverify",
        css_class="cf-turnstile",
        response_field="cf-turnstile-response",
        csp=dict.fromkeys(
            ("script-src", "frame-src"), ("https://challenges.cloudflare.com",)
        ),
    ),
}
MAX_RESPONSE_LENGTH = 4096


@implementer(ICaptchaService)
class SiteVerifyCaptcha:
    """reCAPTCHA, hCaptcha or Turnstile: one protocol, three providers.

    The provider's widget puts a token in the form; :meth:`check` posts it
    with our secret to the provider's siteverify endpoint. Anything but a
    clear success (a refusal, a timeout, a malformed answer, a token issued
    for another site) counts as a wrong answer: the check fails closed.
    """

    def __init__(
        self,
        kind: str,
        *,
        site_key: str,
        secret: str,
        hostname: str,
        verify_url: str = "",
        timeout: float = 5,
        enabled: bool = True,
    ) -> None:
        self.kind = kind
        self.provider = PROVIDERS[kind]
        self.enabled = enabled
        self.secret = secret
        self.hostname = hostname
        self.verify_url = verify_url or self.provider.verify_url
        self.timeout = timeout
        self.widget = {
            "script_url": self.provider.script_url,
            "css_class": self.provider.css_class,
            "site_key": site_key,
        }
        self.csp = self.provider.csp

    @classmethod
    def create_service(cls, context, request) -> SiteVerifyCaptcha:
        settings = request.registry.settings
        return cls(
            settings["captcha.backend"],
            site_key=settings["captcha.site_key"],
            secret=settings["captcha.secret"],
            hostname=urlsplit(settings["idp.base_url"]).hostname,
            verify_url=settings["captcha.verify_url"],
            timeout=settings["captcha.timeout"],
            enabled=settings["captcha.enabled"],
        )

    def new_challenge(self, purpose: str) -> str:
        return ""

    def image(self, token: str) -> None:
        return None

    def audio(self, token: str, locale: str) -> None:
        return None

    def check(
        self, params, client_address: str | None = None, *, purpose: str = ""
    ) -> bool:
        # The provider binds its token to our site key; ``purpose`` is not
        # its concern.
        if not self.enabled:
            return True
        response = params.get(self.provider.response_field) or ""
        if not response or len(response) > MAX_RESPONSE_LENGTH:
            return False
        fields = {"secret": self.secret, "response": response}
        if client_address:
            fields["remoteip"] = client_address
        request = urllib.request.Request(  # noqa: S310 (a fixed https URL from settings)
            self.verify_url,
            data=urlencode(fields).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                verdict = json.loads(answer.read(65536))
        except (OSError, ValueError) as exc:
            log.warning("%s siteverify failed: %s", self.kind, exc)
            return False
        if not isinstance(verdict, dict) or verdict.get("success") is not True:
            return False
        hostname = verdict.get("hostname")
        return hostname is None or hostname == self.hostname


def includeme(config) -> None:
    settings = config.get_settings()
    backend = settings["captcha.backend"]
    factory = ImageCaptcha if backend == "image" else SiteVerifyCaptcha
    if backend == "image" and settings["captcha.enabled"]:
        # Analysing the clips takes a moment; do it at start-up, not in the
        # first request that asks for a sound.
        captcha_media.load_voices()
    config.register_service_factory(factory.create_service, ICaptchaService)
