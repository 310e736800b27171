"""The admin console's forms (idp/views/admin.py). Services check the rules;
these read and check the input, with bilingual messages beside each field."""

from __future__ import annotations

from wtforms import SelectField, StringField

from idp.forms import REQUIRED, BaseForm
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
