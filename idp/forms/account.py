""" "Akaun saya" forms: change the password, the security image and phrase, the email.

Each asks for the current password, so a session left open on a shared
computer is not enough to take the account over (AUTH-21). The view checks
that password; the forms only say whether one was typed.
"""

from __future__ import annotations

from wtforms import PasswordField, RadioField, StringField

from idp.forms import REQUIRED, BaseForm, collapse_spaces, read_email
from idp.forms.login import MESSAGES as LOGIN_MESSAGES
from idp.forms.login import NewPasswordForm
from idp.forms.register import MESSAGES as REGISTER_MESSAGES
from idp.forms.register import RegisterForm
from idp.i18n import _
from idp.services.two_factor import read_code, read_recovery_code

MESSAGES = {
    "current_password": _("Your current password is wrong."),
    "email.same": _("That is already your email address."),
    "two_step.code": _(
        "The code is wrong. Type the code your authenticator app shows now."
    ),
    "two_step.code_or_recovery": _(
        "The code is wrong or has already been used. Type the code your "
        "authenticator app shows now, or one of your recovery codes."
    ),
    "two_step.format": _(
        "Type the 6 digits your authenticator app shows now, or a recovery code."
    ),
}


class _CurrentPassword:
    """The current-password field, required, and a way to call it wrong."""

    current_password = PasswordField()

    def _check_current_password(self) -> None:
        if not self.current_password.data:
            self.current_password.errors = [REQUIRED]

    def current_password_wrong(self) -> None:
        """Show "your current password is wrong" beside the field."""
        self.current_password.errors = [MESSAGES["current_password"]]


class PasswordForm(_CurrentPassword, NewPasswordForm):
    """The current password, and a new one typed twice."""

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        self._check_current_password()
        return not self.errors


class SecurityForm(_CurrentPassword, BaseForm):
    """A new security image and phrase, under the rules registration applies."""

    security_image = RadioField(validate_choice=False)
    security_phrase = StringField()

    # The registration form's own checks, borrowed rather than copied, so the
    # rules for a phrase cannot drift apart between the two forms.
    _error = RegisterForm._error
    _required = RegisterForm._required
    _check_security = RegisterForm._check_security

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        self._check_security()
        self._check_current_password()
        return not self.errors

    def check_phrase(self, violations) -> bool:
        """Put ``violations`` of the new phrase beside it; True if none."""
        if violations:
            self.security_phrase.errors = [v.message for v in violations]
        return not violations

    @property
    def phrase(self) -> str:
        """The phrase as it is stored; call only after :meth:`validate`."""
        return collapse_spaces(self.security_phrase.data)


class EmailForm(_CurrentPassword, BaseForm):
    """A new email address, typed twice, for the signed-in ``user``."""

    email = StringField()
    email_confirm = StringField()

    address: str | None = None

    def __init__(self, formdata=None, *, user, **kwargs) -> None:
        super().__init__(formdata, **kwargs)
        self.user = user

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        self.address = read_email(self.email)
        if self.address is not None:
            again = read_email(self.email_confirm)
            if again is not None and again != self.address:
                self.email_confirm.errors = [REGISTER_MESSAGES["email_confirm"]]
            elif self.address == self.user.email:
                self.email.errors = [MESSAGES["email.same"]]
        self._check_current_password()
        return not self.errors


class FirstSignInForm(NewPasswordForm):
    """The forced first change for someone who never chose an image or phrase.

    An operator-created account has neither; its owner chooses them here,
    with the password, under the rules registration applies.
    """

    security_image = RadioField(validate_choice=False)
    security_phrase = StringField()

    _error = RegisterForm._error
    _required = RegisterForm._required
    _check_security = RegisterForm._check_security

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        self._check_security()
        return not self.errors

    @property
    def phrase(self) -> str:
        """The phrase as it is stored; call only after :meth:`validate`."""
        return collapse_spaces(self.security_phrase.data)


class CurrentPasswordForm(_CurrentPassword, BaseForm):
    """Only the current password: to start two-step setup, or to make new codes."""

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        self._check_current_password()
        return not self.errors


def _read_code(field, invalid, *, recovery: bool = False) -> str | None:
    """The code in ``field`` (a recovery code too if ``recovery``), or None
    with the error on the field: required, or ``invalid``."""
    if not (field.data or "").strip():
        field.errors = [REQUIRED]
        return None
    value = read_code(field.data)
    if value is None and recovery:
        value = read_recovery_code(field.data)
    if value is None:
        field.errors = [invalid]
    return value


class TwoStepConfirmForm(BaseForm):
    """The first code from the authenticator just set up."""

    code = StringField()

    value: str | None = None

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        self.value = _read_code(self.code, LOGIN_MESSAGES["code.format"])
        return not self.errors

    def wrong(self) -> None:
        self.code.errors = [MESSAGES["two_step.code"]]


class TwoStepCheckForm(_CurrentPassword, BaseForm):
    """The password and a code (or recovery code): to turn the second factor
    off, or to replace the recovery codes."""

    code = StringField()

    value: str | None = None

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        self.value = _read_code(self.code, MESSAGES["two_step.format"], recovery=True)
        self._check_current_password()
        return not self.errors

    def wrong(self) -> None:
        self.code.errors = [MESSAGES["two_step.code_or_recovery"]]
