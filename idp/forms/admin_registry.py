"""The console's registry forms: roles, modules, service providers, the outbox.

The services hold the rules (a code's pattern, a name's length, a policy's
coherence) and refuse with a stable code the views translate; these forms
only read the POST and say, in both languages, what is missing or cannot be
read, before a service is asked.
"""

from __future__ import annotations

from wtforms import (
    BooleanField,
    FileField,
    HiddenField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)

from idp.forms import REQUIRED, BaseForm
from idp.i18n import _

#: The largest metadata file the console takes. Real SP metadata is a few
#: KiB to a few tens; the confirm step carries it again in base64, which
#: must stay under idp.max_request_body (1 MiB by default).
UPLOAD_MAX = 512 * 1024
UPLOAD_TOO_LARGE = _("The file is larger than ${size} KiB.", mapping={"size": 512})


def _required(*fields) -> None:
    for field in fields:
        if not (field.data or "").strip():
            field.errors = [REQUIRED]


class ModuleForm(BaseForm):
    """A new module: its code and its names in both languages."""

    code = StringField()
    name_ms = StringField()
    name_en = StringField()

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        _required(self.code, self.name_ms, self.name_en)
        return not self.errors


class RoleForm(ModuleForm):
    """A new role: as a module, and a description."""

    description = TextAreaField()


class RenameForm(BaseForm):
    new = StringField()

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        _required(self.new)
        return not self.errors


class GrantModuleForm(BaseForm):
    module = SelectField(validate_choice=False)

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        _required(self.module)
        return not self.errors


class PolicyForm(BaseForm):
    """What an SP receives: attributes, NameID format, signing, encryption."""

    attributes = SelectMultipleField(validate_choice=False)
    name_id_format = SelectField(validate_choice=False)
    sign_response = BooleanField()
    sign_assertion = BooleanField()
    encrypt_assertion = BooleanField()

    def changes(self) -> dict:
        return {
            "attributes_released": list(self.attributes.data or []),
            "name_id_format": self.name_id_format.data,
            "sign_response": bool(self.sign_response.data),
            "sign_assertion": bool(self.sign_assertion.data),
            "encrypt_assertion": bool(self.encrypt_assertion.data),
        }


class UploadForm(BaseForm):
    """An SP's metadata file, and how to register it."""

    metadata = FileField()
    module = SelectField(validate_choice=False)

    data: bytes | None = None

    def validate(self, extra_validators=None) -> bool:
        super().validate(extra_validators)
        upload = self.metadata.data
        stream = getattr(upload, "file", None)
        if stream is None:
            self.metadata.errors = [_("Choose the metadata file to upload.")]
            return False
        data = stream.read(UPLOAD_MAX + 1)
        if len(data) > UPLOAD_MAX:
            self.metadata.errors = [UPLOAD_TOO_LARGE]
        elif not data.strip():
            self.metadata.errors = [_("The file is empty.")]
        else:
            self.data = data
        return not self.errors


class ConfirmImportForm(BaseForm):
    """The previewed metadata sent back, with what the admin agreed to."""

    metadata_b64 = HiddenField()
    seal = HiddenField()  # the preview's HMAC (views.admin_registry._previewed)
    module = HiddenField()
    replace = BooleanField()
    confirm_hosts = HiddenField()
