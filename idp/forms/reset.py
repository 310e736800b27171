"""Forgot-password forms: the email, the email and identity number, the new password."""

from __future__ import annotations

from wtforms import HiddenField, SelectField, StringField

from idp.forms import BaseForm, read_email, read_identifier
from idp.forms.login import NewPasswordForm
from idp.i18n import _
from idp.identifiers import Identifier

MISMATCH = _("The email or identity number does not match this link.")


class RequestForm(BaseForm):
    email = StringField()
    captcha_token = HiddenField()
    captcha_answer = StringField()

    address: str | None = None

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        self.address = read_email(self.email)
        return not self.errors


class VerifyForm(BaseForm):
    email = StringField()
    identifier = StringField()
    country = SelectField(validate_choice=False)

    address: str | None = None
    parsed: Identifier | None = None

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        self.address = read_email(self.email)
        self.parsed = read_identifier(self.identifier, self.country)
        return not self.errors

    def matches(self, user) -> bool:
        """True if both answers are ``user``'s; call after :meth:`validate`."""
        return (
            self.address == user.email
            and self.parsed.kind == user.identifier_kind
            and self.parsed.value == user.identifier
        )


class NewForm(NewPasswordForm):
    captcha_token = HiddenField()
    captcha_answer = StringField()
