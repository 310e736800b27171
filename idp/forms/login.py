"""Sign-in forms: the identifier, the security-image confirmation, the password."""

from __future__ import annotations

from wtforms import BooleanField, HiddenField, PasswordField, SelectField, StringField

from idp.forms import REQUIRED, BaseForm, read_identifier
from idp.i18n import _
from idp.identifiers import Identifier
from idp.services.two_factor import read_code, read_recovery_code

MESSAGES = {
    "confirm": _(
        "Tick the box only if this is the picture and phrase you chose, or if "
        "you have not chosen them yet."
    ),
    "failed": _("The identity number or password is wrong. Check them and try again."),
    "throttled": _(
        "Too many unsuccessful attempts. For your safety, wait 15 minutes and "
        'try again, or choose "Forgot password".'
    ),
    "password_confirm": _("The two passwords are not the same."),
    # Shown from WARN_WITHIN failures left; the same for every number.
    "lock.one": _(
        "1 attempt left before the account is locked for ${duration}. "
        'Not sure of your password? Choose "Forgot password".'
    ),
    "lock.many": _(
        "${count} attempts left before the account is locked for ${duration}. "
        'Not sure of your password? Choose "Forgot password".'
    ),
    "lookups.captcha": _(
        "Many sign-ins have come from your network in the last hour. To continue, "
        "prove you are not a robot below."
    ),
    "code.format": _("Type the 6 digits your authenticator app shows now."),
    "recovery.format": _(
        "A recovery code has 12 letters and digits, such as 7k3m-q9xd-2hfp."
    ),
    "code.wrong": _(
        "The code is wrong or has already been used. Type the code your "
        "authenticator app shows now, or use a recovery code."
    ),
    "code.expired": _("The sign-in took too long. Type your identity number again."),
    "lookups.wait": _(
        "Too many sign-ins have come from your network in the last hour. "
        "Wait a while, then try again."
    ),
}
PASSWORD_MAX = 256


class IdentifierForm(BaseForm):
    identifier = StringField()
    country = SelectField(validate_choice=False)
    next = HiddenField()
    # Only asked for past the lookup limits (AUTH-27).
    captcha_token = HiddenField()
    captcha_answer = StringField()

    parsed: Identifier | None = None

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        self.parsed = read_identifier(self.identifier, self.country)
        return self.parsed is not None


class ImageForm(BaseForm):
    confirm = BooleanField()

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        if not self.confirm.data:
            self.confirm.errors = [MESSAGES["confirm"]]
        return not self.errors


class PasswordForm(BaseForm):
    password = PasswordField()

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        if not self.password.data:
            self.password.errors = [REQUIRED]
        return not self.errors


class CodeForm(BaseForm):
    """The second step: a code from the authenticator, or a recovery code.

    The page has one form for each; whichever field was sent is read.
    """

    code = StringField()
    recovery_code = StringField()

    value: str | None = None

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        if (self.recovery_code.data or "").strip():
            self.value = read_recovery_code(self.recovery_code.data)
            if self.value is None:
                self.recovery_code.errors = [MESSAGES["recovery.format"]]
        elif not (self.code.data or "").strip():
            self.code.errors = [REQUIRED]
        else:
            self.value = read_code(self.code.data)
            if self.value is None:
                self.code.errors = [MESSAGES["code.format"]]
        return not self.errors

    def wrong(self) -> None:
        """Say beside the field that was used that its code was not accepted."""
        field = self.recovery_code if self.recovery_code.data else self.code
        field.errors = [MESSAGES["code.wrong"]]


class NewPasswordForm(BaseForm):
    """A new password, typed twice, checked against the policy by the caller."""

    password = PasswordField()
    password_confirm = PasswordField()

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        for field in (self.password, self.password_confirm):
            if not field.data:
                field.errors = [REQUIRED]
        if not self.errors and self.password.data != self.password_confirm.data:
            self.password_confirm.errors = [MESSAGES["password_confirm"]]
        return not self.errors

    def check_policy(self, violations) -> bool:
        """Put the policy's ``violations`` on the password field; True if none."""
        if violations:
            self.password.errors = [v.message for v in violations]
        return not violations
