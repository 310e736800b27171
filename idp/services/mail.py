"""Outgoing email: templates, the outbox, and one function per email.

An email is a template triple under ``templates/email/<name>/``
(``subject.txt``, ``body.txt``, ``body.html``) plus one function below that
returns its context. The :func:`email` decorator turns that function into
one that renders the message in the recipient's language first and the
other language second, and writes it to the outbox in the caller's
transaction. Nothing is sent during a web request: the delivery worker
(:mod:`idp.services.delivery`) sends the outbox afterwards.

Stored messages are sealed with AES-256-GCM under a key derived from
``idp.hmac_key``: a temporary password waiting in the outbox is not readable
from a database dump.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import gettext
import json
import os
from collections.abc import Callable
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from markupsafe import Markup
from sqlalchemy.exc import IntegrityError
from zope.interface import implementer

from idp import logmask
from idp.i18n import DOMAIN, LOCALES, _, other_locale
from idp.identifiers import Identifier
from idp.jinja2 import TEMPLATES_DIR
from idp.models import OutboxMessage
from idp.services.interfaces import IOutbox

EMAIL_TEMPLATES = TEMPLATES_DIR / "email"
# Outbox rows whose template starts with this are jobs, not messages: work
# the delivery worker does (and deletes the row) instead of the request.
JOB_PREFIX = "job:"
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
FOOTER = _("This email was sent automatically by idMe; replies are not read.")


class OutboxCodecError(ValueError):
    """A stored message cannot be opened (tampered, or sealed under another key)."""


class OutboxCodec:
    """Seals and opens stored messages with AES-256-GCM.

    The key is derived from ``idp.hmac_key`` with HKDF, so the outbox needs
    no secret of its own. Changing ``idp.hmac_key`` makes messages still
    waiting unreadable: drain the outbox first.
    """

    VERSION = "v1"

    def __init__(self, secret: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=b"idp outbox message v1",
        ).derive(secret.encode())
        self._aead = AESGCM(key)

    def seal(self, data: bytes) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, data, self.VERSION.encode())
        return f"{self.VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, text: str) -> bytes:
        version, _, payload = text.partition(".")
        try:
            if version != self.VERSION:
                raise ValueError(version)
            raw = base64.urlsafe_b64decode(payload.encode())
            return self._aead.decrypt(raw[:12], raw[12:], self.VERSION.encode())
        except (ValueError, InvalidTag):
            raise OutboxCodecError("the stored message cannot be opened") from None


def parse_message(data: bytes) -> EmailMessage:
    return BytesParser(policy=SMTP).parsebytes(data)


class Composer:
    """Renders an email template into a bilingual ``EmailMessage``.

    One Jinja2 environment per language, each with its translations
    installed, so rendering is thread-safe. ``.html`` templates are
    autoescaped; ``.txt`` ones are not (they are plain text).
    """

    def __init__(self, settings: dict, templates: Path = EMAIL_TEMPLATES) -> None:
        self.sender = settings["mail.sender"]
        self.base_url = settings["idp.base_url"]
        self.names = {loc: settings[f"idp.name.{loc}"] for loc in LOCALES}
        # Mail that sends people to the helpdesk says how to reach it. The
        # settings are optional (a test or a small deployment may have none);
        # the templates leave the line out when they are empty.
        self.helpdesks = {
            loc: {
                "name": settings.get(f"idp.helpdesk.name.{loc}", ""),
                "email": settings.get("idp.helpdesk.email", ""),
                "phone": settings.get("idp.helpdesk.phone", ""),
            }
            for loc in LOCALES
        }
        self.timezone = ZoneInfo(settings["idp.timezone"])
        self._translations = {
            loc: gettext.translation(
                DOMAIN, localedir=str(LOCALE_DIR), languages=[loc], fallback=True
            )
            for loc in LOCALES
        }
        self._envs = {
            loc: self._environment(templates, self._translations[loc])
            for loc in LOCALES
        }

    @staticmethod
    def _environment(templates: Path, translations) -> jinja2.Environment:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(templates)),
            autoescape=jinja2.select_autoescape(["html"], default_for_string=False),
            extensions=["jinja2.ext.i18n"],
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        # Added to the environment by the jinja2.ext.i18n extension above,
        # which jinja2's annotations cannot know.
        env.install_gettext_translations(  # type: ignore[attr-defined]
            translations, newstyle=True
        )
        return env

    def _render(self, name: str, part: str, locale: str, context: dict) -> str:
        template = self._envs[locale].get_template(f"{name}/{part}")
        return template.render(
            **context,
            locale=locale,
            idp_name=self.names[locale],
            base_url=self.base_url,
            # Straight to the sign-in form: a mail's reader has one thing to do.
            login_url=f"{self.base_url}/login",
            helpdesk=self.helpdesks[locale],
        )

    def compose(
        self, name: str, *, recipient: str, locale: str, context: dict
    ) -> EmailMessage:
        order = (locale, other_locale(locale)) if locale in LOCALES else LOCALES
        subjects = [self._render(name, "subject.txt", loc, context) for loc in order]
        texts = [self._render(name, "body.txt", loc, context) for loc in order]
        htmls = [
            # Rendered by the autoescaping .html environment: already safe.
            Markup(self._render(name, "body.html", loc, context))  # noqa: S704
            for loc in order
        ]
        subject = " / ".join(dict.fromkeys(s.strip() for s in subjects))
        message = EmailMessage(policy=SMTP)
        message["Subject"] = subject
        message["From"] = self.sender
        message["To"] = Address(addr_spec=recipient)
        message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
        message["Message-ID"] = make_msgid(domain=self._sender_domain())
        message["Auto-Submitted"] = "auto-generated"
        separator = "\n" + "-" * 60 + "\n\n"
        message.set_content(separator.join(text.strip() + "\n" for text in texts))
        layout = self._envs[order[0]].get_template("layout.html")
        footer = " / ".join(self._translations[loc].gettext(FOOTER) for loc in order)
        message.add_alternative(
            layout.render(
                sections=list(zip(order, htmls, strict=True)),
                idp_name=self.names[order[0]],
                subject=subject,
                footer=footer,
            ),
            subtype="html",
        )
        # After the body: set_content() drops any Content-* header set before.
        message["Content-Language"] = ", ".join(order)
        return message

    def _sender_domain(self) -> str:
        return parseaddr(self.sender)[1].rpartition("@")[2]

    def local_time(self, moment: dt.datetime, locale: str) -> str:
        """``moment`` as people in the IdP's time zone read it, in ``locale``."""
        from babel.dates import format_datetime as babel_format

        return babel_format(
            moment, "d MMMM y, HH:mm zzz", tzinfo=self.timezone, locale=locale
        )


@implementer(IOutbox)
class Outbox:
    """Writes composed messages to the outbox in the current transaction."""

    def __init__(self, dbsession, composer: Composer, codec: OutboxCodec) -> None:
        self.dbsession = dbsession
        self.composer = composer
        self.codec = codec

    @classmethod
    def create_service(cls, context, request):
        registry = request.registry
        return cls(
            request.dbsession, registry["idp.mail.composer"], registry["idp.mail.codec"]
        )

    def add(self, name, *, recipient, locale, context, dedupe_key=None):
        message = self.composer.compose(
            name, recipient=recipient, locale=locale, context=context
        )
        row = OutboxMessage(
            template=name,
            recipient=recipient,
            message=self.codec.seal(message.as_bytes()),
            dedupe_key=dedupe_key,
        )
        if dedupe_key is None:
            self.dbsession.add(row)
            self.dbsession.flush()
            return row
        try:
            with self.dbsession.begin_nested():
                self.dbsession.add(row)
        except IntegrityError:
            return None
        return row

    def defer(self, job, data):
        """Queue the job ``job`` with the JSON-able ``data``, sealed; return the row.

        The row names no recipient: who, if anyone, gets mail is for the
        job to find out outside the request.
        """
        row = OutboxMessage(
            template=JOB_PREFIX + job,
            recipient="",
            message=self.codec.seal(json.dumps(data, sort_keys=True).encode()),
        )
        self.dbsession.add(row)
        self.dbsession.flush()
        return row


def open_job(codec: OutboxCodec, row: OutboxMessage) -> dict:
    """The data :meth:`Outbox.defer` sealed into ``row``."""
    return json.loads(codec.open(row.message))


def email(name: str) -> Callable:
    """Make ``fn(composer, user, **kw) -> context`` queue the email ``name``.

    The decorated function is called as ``fn(outbox, user, **kw)``, with an
    optional ``dedupe_key=``; it returns the outbox row, or ``None`` when a
    message with the same dedupe key was already queued. The message goes
    to ``user.email`` in ``user.locale``, unless ``recipient=`` names
    another address (a new email waiting for its confirmation, or the old
    one after a change).
    """

    def decorate(fn: Callable[..., dict[str, Any]]) -> Callable:
        @functools.wraps(fn)
        def queue(
            outbox: Outbox,
            user,
            /,
            *,
            dedupe_key: str | None = None,
            recipient: str | None = None,
            **kw,
        ):
            return outbox.add(
                name,
                recipient=recipient or user.email,
                locale=user.locale,
                context=fn(outbox.composer, user, **kw),
                dedupe_key=dedupe_key,
            )

        return queue

    return decorate


def _person(user) -> dict[str, str]:
    identifier = Identifier(user.identifier_kind, user.identifier)
    return {"full_name": user.full_name, "identifier": identifier.masked}


def _moment(composer: Composer, moment) -> dict[str, str]:
    """``moment`` in each language, for a template to pick with ``[locale]``."""
    return {loc: composer.local_time(moment, loc) for loc in LOCALES}


def _temporary(composer: Composer, user, password: str, expires_at) -> dict:
    return {
        **_person(user),
        "password": password,
        "expires_at": _moment(composer, expires_at),
    }


@email("temporary-password")
def temporary_password(composer: Composer, user, *, password: str, expires_at):
    """The welcome email of an account its owner registered: the temporary password."""
    return _temporary(composer, user, password, expires_at)


@email("account-created")
def account_created(composer: Composer, user, *, password: str, expires_at):
    """The welcome email of an account the helpdesk created (``user add``)."""
    return _temporary(composer, user, password, expires_at)


@email("temporary-password-reset")
def temporary_password_reset(composer: Composer, user, *, password: str, expires_at):
    """A new temporary password the helpdesk issued (``user reset-password``)."""
    return _temporary(composer, user, password, expires_at)


@email("already-registered")
def already_registered(composer: Composer, user):
    """Told to an account's owner when someone registers with their details."""
    return _person(user)


@email("password-changed")
def password_changed(composer: Composer, user, *, changed_at):
    """Confirms a password change to the owner, who can act if it was not them."""
    return {**_person(user), "changed_at": _moment(composer, changed_at)}


@email("account-locked")
def account_locked(composer: Composer, user, *, until):
    """Tells the owner wrong passwords locked the account until ``until``.

    A password reset by email ends the lock; the helpdesk is not needed.
    """
    return {**_person(user), "until": _moment(composer, until)}


@email("account-locked-codes")
def account_locked_codes(composer: Composer, user, *, until):
    """Tells the owner wrong codes, after their right password, locked the account.

    Unlike :func:`account_locked`, it says the password is known to whoever
    typed it, and to set a new one now.
    """
    return {**_person(user), "until": _moment(composer, until)}


@email("account-locked-by-helpdesk")
def account_locked_by_helpdesk(composer: Composer, user, *, locked_at):
    """Tells the owner an operator locked the account (``user lock``)."""
    return {**_person(user), "locked_at": _moment(composer, locked_at)}


@email("admin-role-changed")
def admin_role_changed(composer: Composer, user, *, role: str, granted: bool, at):
    """Tells the owner an admin role was given to or taken from the account."""
    return {
        **_person(user),
        "role": role,
        "granted": granted,
        "changed_at": _moment(composer, at),
    }


@email("security-image-changed")
def security_image_changed(composer: Composer, user, *, changed_at):
    """Tells the owner their security image or phrase was changed."""
    return {**_person(user), "changed_at": _moment(composer, changed_at)}


@email("password-reset")
def password_reset(composer: Composer, user, *, link: str, expires_at):
    """The single-use link of "Lupa Kata Laluan"."""
    return {**_person(user), "link": link, "expires_at": _moment(composer, expires_at)}


@email("email-change-confirm")
def email_change_confirm(composer: Composer, user, *, link: str, expires_at):
    """The link that makes the address it is sent to ``user``'s email."""
    return {**_person(user), "link": link, "expires_at": _moment(composer, expires_at)}


@email("email-change-in-use")
def email_change_in_use(composer: Composer, user):
    """Tells ``user`` someone asked to move their address to another account.

    Names neither the account that asked nor anything about it: the
    requester's details are not the recipient's business.
    """
    return {"full_name": user.full_name}


@email("email-changed")
def email_changed(
    composer: Composer, user, *, new_email: str, changed_at, by_helpdesk: bool = False
):
    """Tells the old address the account's email changed, and how to undo it.

    The new address is shown masked: the old mailbox may be a stranger's
    (the typo that brought the owner here).
    """
    return {
        **_person(user),
        "new_email": logmask.mask(new_email),
        "changed_at": _moment(composer, changed_at),
        "by_helpdesk": by_helpdesk,
    }


@email("email-set-by-helpdesk")
def email_set_by_helpdesk(composer: Composer, user, *, changed_at):
    """Tells the new address the helpdesk made it the account's email."""
    return {**_person(user), "changed_at": _moment(composer, changed_at)}


@email("two-step-enabled")
def two_step_enabled(composer: Composer, user, *, changed_at):
    """Tells the owner two-step verification was turned on."""
    return {**_person(user), "changed_at": _moment(composer, changed_at)}


@email("two-step-disabled")
def two_step_disabled(composer: Composer, user, *, changed_at, by_helpdesk=False):
    """Tells the owner two-step verification was turned off, and by whom."""
    return {
        **_person(user),
        "changed_at": _moment(composer, changed_at),
        "by_helpdesk": by_helpdesk,
    }


@email("recovery-codes-replaced")
def recovery_codes_replaced(composer: Composer, user, *, changed_at):
    """Tells the owner new recovery codes replaced the old ones."""
    return {**_person(user), "changed_at": _moment(composer, changed_at)}


@email("recovery-code-used")
def recovery_code_used(composer: Composer, user, *, used_at, remaining: int):
    """Tells the owner a recovery code signed in, and how many are left."""
    return {
        **_person(user),
        "used_at": _moment(composer, used_at),
        "remaining": remaining,
    }


def includeme(config) -> None:
    settings = config.get_settings()
    config.registry["idp.mail.composer"] = Composer(settings)
    config.registry["idp.mail.codec"] = OutboxCodec(settings["idp.hmac_key"])
    config.register_service_factory(Outbox.create_service, IOutbox)
