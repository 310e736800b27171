"""The admin console's forms (idp/views/admin.py). Services check the rules;
these read and check the input, with bilingual messages beside each field."""

from __future__ import annotations

from wtforms import SelectField, StringField

from idp.contact import InvalidContact, normalise_phone
from idp.forms import (
    REQUIRED,
    BaseForm,
    collapse_spaces,
    has_control_characters,
    read_email,
)
from idp.forms.register import RegisterForm
from idp.i18n import _
from idp.identifiers import Identifier, InvalidIdentifier, parse_identifier
from idp.models import AdminRole

ROLE_NAMES = {
    AdminRole.HELPDESK.value: _("Helpdesk"),
    AdminRole.REGISTRY.value: _("Registry"),
    AdminRole.AUDITOR.value: _("Auditor"),
    AdminRole.SUPERADMIN.value: _("Superadmin"),
}
NOT_FOUND = _("No account has this identity number.")


class GrantForm(BaseForm):
    """Give an admin role to the account with an identity number."""

    identifier = StringField()
    country = StringField()
    role = SelectField(choices=list(ROLE_NAMES), validate_choice=False)

    parsed: Identifier | None = None

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        text = (self.identifier.data or "").strip()
        if not text:
            self.identifier.errors = [REQUIRED]
        else:
            try:
                self.parsed = parse_identifier(text[:64], self.country.data)
            except InvalidIdentifier as exc:
                self.identifier.errors = [exc.message]
        if self.role.data not in ROLE_NAMES:
            self.role.errors = [_("Choose one of the roles.")]
        return not self.errors

    def not_found(self) -> None:
        self.identifier.errors = [NOT_FOUND]


class SearchForm(BaseForm):
    """The helpdesk's search: a number, a name, an email or a phone."""

    q = StringField()
    country = StringField()

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        text = self.q.data or ""
        if has_control_characters(text):
            self.q.errors = [_("Remove the line breaks and invisible characters.")]
        return not self.errors

    def refused(self, code: str) -> None:
        self.q.errors = [SEARCH_MESSAGES[code]]


SEARCH_MESSAGES = {
    "search.short": _("Type at least 2 characters."),
    "search.long": _("Type at most 200 characters."),
}


class LockForm(BaseForm):
    """Why the account is locked, for the audit log (optional)."""

    reason = StringField()

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        raw = self.reason.data or ""
        if has_control_characters(raw):
            self.reason.errors = [_("Remove the line breaks and invisible characters.")]
        elif len(collapse_spaces(raw)) > REASON_MAX:
            self.reason.errors = [
                _(
                    "Write at most ${max} characters.",
                    mapping={"max": REASON_MAX},
                )
            ]
        return not self.errors

    @property
    def value(self) -> str | None:
        return collapse_spaces(self.reason.data or "") or None


REASON_MAX = 200


class EmailForm(BaseForm):
    """The account's correct email address (the helpdesk's fix)."""

    email = StringField()

    address: str | None = None

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        self.address = read_email(self.email)
        return not self.errors


class ProfileForm(RegisterForm):
    """Name, phone, category and institution, checked as at registration."""

    def validate(self, extra_validators=None) -> bool:
        BaseForm.validate(self, extra_validators)
        self._check_category()
        self._check_name()
        if not self._required(self.phone):
            try:
                normalise_phone(self.phone.data)
            except InvalidContact as exc:
                self._error(self.phone, exc.message)
        self._check_institution()
        return not self.errors

    def values(self) -> dict[str, str | None]:
        """The checked values, normalised; call only after :meth:`validate`."""
        return {
            "full_name": collapse_spaces(self.full_name.data),
            "phone": normalise_phone(self.phone.data),
            "category": self.category.data,
            "institution": collapse_spaces(self.institution.data or "") or None,
        }
