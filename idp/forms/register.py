"""The registration form: every field checked, every value normalised."""

from __future__ import annotations

import functools
import unicodedata

from wtforms import HiddenField, RadioField, SelectField, StringField

from idp import security_images
from idp.contact import InvalidContact, normalise_email, normalise_phone
from idp.forms import (
    CAPTCHA_HOSTED_WRONG,
    CAPTCHA_WRONG,
    PHRASE_MAX,
    PHRASE_MIN,
    REQUIRED,
    BaseForm,
    collapse_spaces,
    has_control_characters,
)
from idp.i18n import _
from idp.identifiers import (
    COUNTRIES,
    Identifier,
    InvalidIdentifier,
    alpha2,
    parse_identifier,
)
from idp.models.user import UserCategory
from idp.services.users import Registration

CATEGORIES = {
    UserCategory.STUDENT: _("Student"),
    UserCategory.PARENT: _("Parent or guardian"),
    UserCategory.EDUCATOR: _("Educator"),
    UserCategory.AGENCY: _("Staff of a ministry or agency"),
    UserCategory.PRIVATE_INSTITUTION: _("Private institution operator"),
    UserCategory.PUBLIC: _("Member of the public"),
}
# Categories whose members belong to a school, agency or institution.
NEEDS_INSTITUTION = frozenset(
    {
        UserCategory.STUDENT,
        UserCategory.EDUCATOR,
        UserCategory.AGENCY,
        UserCategory.PRIVATE_INSTITUTION,
    }
)


def institution_required(category: str | None) -> bool:
    """Whether the form marks the institution required for ``category``.

    Until a category is chosen the field is marked required, as it is for
    most people; the server asks for it only once the category needs it.
    """
    return category not in OPTIONAL_INSTITUTION


OPTIONAL_INSTITUTION = frozenset(CATEGORIES) - NEEDS_INSTITUTION
ID_TYPES = {"mykad": _("MyKad / MyKid"), "passport": _("Passport")}

NAME_MIN, NAME_MAX = 3, 150
# Besides letters and combining marks: what Malaysian names use in "A/L",
# "A/P", "bin", "@" aliases, "Mohd." and "O'Neil".
NAME_PUNCTUATION = frozenset(" '-./@,()")
INSTITUTION_MIN, INSTITUTION_MAX = 2, 200

MESSAGES = {
    "category": _("Choose the category that describes you."),
    "id_type": _("Choose MyKad / MyKid or passport."),
    "full_name.length": _(
        "Enter your full name as in your identity document "
        "(${min} to ${max} characters).",
        mapping={"min": NAME_MIN, "max": NAME_MAX},
    ),
    "full_name.characters": _(
        "A name may contain letters, spaces and the marks ' - . / @ , ( ) only."
    ),
    "email_confirm": _("The two email addresses are not the same."),
    "institution.length": _(
        "Enter the name or code of your school, agency or institution "
        "(${min} to ${max} characters).",
        mapping={"min": INSTITUTION_MIN, "max": INSTITUTION_MAX},
    ),
    "security_image": _("Choose your security image."),
    "security_phrase.length": _(
        "Your security phrase must have ${min} to ${max} characters.",
        mapping={"min": PHRASE_MIN, "max": PHRASE_MAX},
    ),
    "characters": _("Remove the line breaks and invisible characters."),
    "captcha": CAPTCHA_WRONG,
    "captcha.hosted": CAPTCHA_HOSTED_WRONG,
}


@functools.cache
def country_choices(locale: str) -> list[tuple[str, str]]:
    """Every passport country as (alpha-3 code, name in ``locale``), by name."""
    from babel import Locale

    names = Locale.parse(locale).territories
    choices = []
    for code in COUNTRIES:
        choices.append((code, names.get(alpha2(code), code)))
    return sorted(choices, key=lambda choice: choice[1].casefold())


class RegisterForm(BaseForm):
    # Choices are checked in validate() and drawn by the template; the fields
    # only carry the submitted values.
    category = SelectField(validate_choice=False)
    id_type = RadioField(default="mykad", validate_choice=False)
    mykad = StringField()
    passport_country = SelectField(validate_choice=False)
    passport_number = StringField()
    full_name = StringField()
    email = StringField()
    email_confirm = StringField()
    phone = StringField()
    institution = StringField()
    security_image = RadioField(validate_choice=False)
    security_phrase = StringField()
    captcha_token = HiddenField()
    captcha_answer = StringField()

    identifier: Identifier | None = None

    def _error(self, field, message) -> None:
        field.errors = [*field.errors, message]

    def _required(self, *fields) -> list:
        missing = []
        for field in fields:
            if not (field.data or "").strip():
                self._error(field, REQUIRED)
                missing.append(field)
        return missing

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        self._check_category()
        self._check_identifier()
        self._check_name()
        self._check_contact()
        self._check_institution()
        self._check_security()
        return not self.errors

    def _check_category(self) -> None:
        if self.category.data not in {c.value for c in CATEGORIES}:
            self._error(self.category, MESSAGES["category"])

    def _check_identifier(self) -> None:
        kind = self.id_type.data
        if kind == "mykad":
            fields, country = (self.mykad,), None
        elif kind == "passport":
            fields = (self.passport_country, self.passport_number)
            country = self.passport_country.data or ""
        else:
            self._error(self.id_type, MESSAGES["id_type"])
            return
        if self._required(*fields):
            return
        try:
            self.identifier = parse_identifier(fields[-1].data, country)
        except InvalidIdentifier as exc:
            target = (
                self.passport_country if exc.code == "passport.country" else fields[-1]
            )
            self._error(target, exc.message)

    def _check_name(self) -> None:
        raw = self.full_name.data or ""
        if self._required(self.full_name):
            return
        if has_control_characters(raw):
            self._error(self.full_name, MESSAGES["characters"])
            return
        name = collapse_spaces(raw)
        if not NAME_MIN <= len(name) <= NAME_MAX:
            self._error(self.full_name, MESSAGES["full_name.length"])
        elif not all(
            ch in NAME_PUNCTUATION or unicodedata.category(ch)[0] in "LM" for ch in name
        ):
            self._error(self.full_name, MESSAGES["full_name.characters"])

    def _check_contact(self) -> None:
        for field, normalise in (
            (self.email, normalise_email),
            (self.phone, normalise_phone),
        ):
            if self._required(field):
                continue
            try:
                normalise(field.data)
            except InvalidContact as exc:
                self._error(field, exc.message)
        # An empty confirmation is named even while the email itself is
        # wrong: every empty required field shows at once.
        if self._required(self.email_confirm) or self.email.errors:
            return
        try:
            same = normalise_email(self.email_confirm.data) == normalise_email(
                self.email.data
            )
        except InvalidContact:
            same = False
        if not same:
            self._error(self.email_confirm, MESSAGES["email_confirm"])

    def _check_institution(self) -> None:
        raw = self.institution.data or ""
        needed = self.category.data in NEEDS_INSTITUTION
        if not raw.strip():
            if needed:
                self._error(self.institution, REQUIRED)
            return
        if has_control_characters(raw):
            self._error(self.institution, MESSAGES["characters"])
        elif not INSTITUTION_MIN <= len(collapse_spaces(raw)) <= INSTITUTION_MAX:
            self._error(self.institution, MESSAGES["institution.length"])

    def _check_security(self) -> None:
        if not security_images.is_valid(self.security_image.data or ""):
            self._error(self.security_image, MESSAGES["security_image"])
        raw = self.security_phrase.data or ""
        if self._required(self.security_phrase):
            return
        if has_control_characters(raw):
            self._error(self.security_phrase, MESSAGES["characters"])
        elif not PHRASE_MIN <= len(collapse_spaces(raw)) <= PHRASE_MAX:
            self._error(self.security_phrase, MESSAGES["security_phrase.length"])

    def registration(self, locale: str) -> Registration:
        """The checked values, normalised; call only after :meth:`validate`."""
        institution = collapse_spaces(self.institution.data) or None
        return Registration(
            category=self.category.data,
            identifier=self.identifier,
            full_name=collapse_spaces(self.full_name.data),
            email=normalise_email(self.email.data),
            phone=normalise_phone(self.phone.data),
            institution=institution,
            security_image=self.security_image.data,
            security_phrase=collapse_spaces(self.security_phrase.data),
            locale=locale,
        )
