"""The console's registry: roles, modules, service providers and sources.

Reading needs ``admin.registry.read`` (the registry role, the auditor);
every change needs ``admin.registry.act`` (the registry role only, within
the re-authentication window) and goes through the service that owns the
rule (:mod:`idp.services.modules`, :mod:`idp.services.service_providers`),
which audits it with the admin and their address. A refusal is shown in the
admin's language (:data:`REFUSALS`, by the service's stable code) and
nothing is written. Lists are paginated and sorted in SQL; a query value a
list does not take is a 400 page (:func:`listing`).

Partner metadata is data: display names, entity IDs and the metadata's
diff are written with autoescape, never marked safe.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging

from pyramid.httpexceptions import HTTPBadRequest, HTTPNotFound, HTTPSeeOther
from pyramid.view import view_config

from idp.authz import Permission
from idp.forms.admin_registry import (
    ConfirmImportForm,
    GrantModuleForm,
    ModuleForm,
    PolicyForm,
    RenameForm,
    RoleForm,
    UploadForm,
)
from idp.i18n import _
from idp.services.accounts import masked
from idp.services.errors import Invalid, NotFound, Refused
from idp.services.interfaces import IModuleRegistry, IReports, IServiceProviders
from idp.services.listing import parse_listing
from idp.services.reports import (
    MODULE_SORTS,
    PENDING_SORTS,
    QUARANTINE_SORTS,
    ROLE_SORTS,
    ROLE_USER_SORTS,
    SP_SORTS,
)
from idp.views.admin import actor

log = logging.getLogger(__name__)

#: The services' refusals, in the admin's language, by their stable code.
REFUSALS = {
    "code.invalid": _(
        "Use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit."
    ),
    "text.empty": _("This field is required."),
    "text.control_characters": _("Remove the line breaks and control characters."),
    "text.too_long": _("Too long: at most ${max} characters."),
    "module.taken": _("A module with code ${existing} already exists."),
    "role.taken": _("A role named ${existing} already exists."),
    "module.same_name": _("That is already its code."),
    "role.same_name": _("That is already its name."),
    "module.in_use": _(
        "Module ${module} is still in use: take it from the roles that grant "
        "it and move its service providers to another module first."
    ),
    "role.in_use": _(
        "Role ${role} is still held by ${holders} account(s): take it from them first."
    ),
    "sp.trust_changed": _(
        "The new metadata changes keys or endpoints the service provider is "
        "trusted with. Check the changes, then tick \u201creplace\u201d to accept them."
    ),
    "sp.host_claimed": _(
        "An endpoint is on a host another service provider uses. Confirm the "
        "host only if you know it serves both."
    ),
    "sp.refused": _("The metadata was refused:"),
    "sp.registered_again": _(
        "Not removed: the service provider was registered again meanwhile. "
        "Check it and try again."
    ),
    "sp.policy_empty": _("Nothing to change."),
    "sp.policy_unsigned": _(
        "Sign the response, the assertion or both: a service provider never "
        "receives an assertion with no signature. Nothing was changed."
    ),
    "sp.policy_assertions_wanted": _(
        "This service provider's metadata asks for signed assertions, so its "
        "assertions stay signed. Nothing was changed."
    ),
    "source.approve_refused": _("The change cannot be applied:"),
    "list.bad_query": _("This list cannot be shown that way."),
}
UNTRANSLATED = _("This change was refused; nothing was changed.")


def refusal(exc: Refused):
    """A service's refusal in the admin's language, its values filled in."""
    message = REFUSALS.get(exc.code)
    if message is None:
        log.warning("untranslated refusal %s", exc.code)
        return UNTRANSLATED
    mapping = {
        key: value
        for key, value in exc.params.items()
        if isinstance(value, str | int) and not isinstance(value, bool)
    }
    return _(message, mapping=mapping) if mapping else message


def listing(request, sorts, default: str, *, descending=False, filters=()):
    """The page the query string asks for; a 400 page for a value it cannot be."""
    try:
        return parse_listing(
            request.GET,
            sorts=sorts,
            default_sort=default,
            default_descending=descending,
            filters=filters,
        )
    except Invalid:
        raise HTTPBadRequest() from None


def _flash_back(request, message, route: str, **kw) -> HTTPSeeOther:
    request.session.flash(message)
    return HTTPSeeOther(request.route_path(route, **kw))


def _can_act(request) -> bool:
    # Shown to a registry admin even when stale: sending asks for the password.
    return request.context.holds(Permission.REGISTRY_ACT)


# Roles


def _roles_page(request, form: RoleForm, message=None) -> dict:
    return {
        "page": request.service(IReports).roles(listing(request, ROLE_SORTS, "name")),
        "form": form,
        "message": message,
        "can_act": _can_act(request),
    }


@view_config(
    route_name="admin.roles",
    renderer="admin/roles.jinja2",
    permission=Permission.REGISTRY_READ,
    request_method=("GET", "HEAD"),
)
def roles(request):
    return _roles_page(request, RoleForm())


@view_config(
    route_name="admin.roles",
    renderer="admin/roles.jinja2",
    permission=Permission.REGISTRY_ACT,
    request_method="POST",
    require_methods=["GET", "HEAD", "POST"],
)
def role_create(request):
    form = RoleForm(request.POST)
    message = None
    if form.validate():
        try:
            role = request.service(IModuleRegistry).create_role(
                form.code.data.strip(),
                name_ms=form.name_ms.data,
                name_en=form.name_en.data,
                description=form.description.data,
                actor=actor(request),
            )
        except Refused as exc:
            message = _field_error(form, exc)
        else:
            return _flash_back(
                request,
                _("Role ${name} created.", mapping={"name": role.name}),
                "admin.role",
                name=role.name,
            )
    request.response.status_int = 400
    return _roles_page(request, form, message)


def _field_error(form, exc: Refused):
    """Put the refusal beside the field it is about; the message otherwise.

    A code or name taken (``module.taken``, ``role.taken``) names no field:
    it is about the one the admin typed the code or new name in.
    """
    fields = {"name": "code", "code": "code", "new": "new"}
    name = fields.get(exc.field or "", exc.field)
    if name is None and exc.code.endswith(".taken"):
        name = "new" if hasattr(form, "new") else "code"
    field = getattr(form, name, None) if name else None
    if field is not None:
        field.errors = [refusal(exc)]
        form._errors = None  # WTForms caches form.errors; the summary reads it
        return None
    return refusal(exc)


def _role_or_404(request):
    try:
        return request.service(IModuleRegistry).find_role(request.matchdict["name"])
    except NotFound:
        raise HTTPNotFound() from None


def _role_page(request, role, *, message=None, rename=None, grant=None) -> dict:
    reports = request.service(IReports)
    registry = request.service(IModuleRegistry)
    granted = sorted(role.modules, key=lambda module: module.code.lower())
    others = [m for m in registry.modules() if m not in role.modules]
    grant = grant or GrantModuleForm()
    grant.module.choices = [(m.code, m.code) for m in others]
    return {
        "role": role,
        "modules": granted,
        "holders": reports.role_users(role, listing(request, ROLE_USER_SORTS, "name")),
        "reach": reports.role_reach(role),
        "rename": rename or RenameForm(),
        "grant": grant,
        "others": others,
        "message": message,
        "masked": masked,
        "can_act": _can_act(request),
    }


@view_config(
    route_name="admin.role",
    renderer="admin/role.jinja2",
    permission=Permission.REGISTRY_READ,
    request_method=("GET", "HEAD"),
)
def role(request):
    return _role_page(request, _role_or_404(request))


@view_config(
    route_name="admin.role",
    renderer="admin/role.jinja2",
    permission=Permission.REGISTRY_ACT,
    request_method="POST",
    require_methods=["GET", "HEAD", "POST"],
)
def role_act(request):
    role = _role_or_404(request)
    registry = request.service(IModuleRegistry)
    who = actor(request)
    action = request.POST.get("action")
    rename = RenameForm(request.POST) if action == "rename" else None
    grant = GrantModuleForm(request.POST) if action in ("grant", "revoke") else None
    message = None
    try:
        if action == "rename" and rename is not None and rename.validate():
            old = registry.rename_role(role.name, rename.new.data.strip(), actor=who)
            return _flash_back(
                request,
                _("Role ${old} is now ${new}.", mapping={"old": old, "new": role.name}),
                "admin.role",
                name=role.name,
            )
        if action in ("grant", "revoke") and grant is not None and grant.validate():
            code = grant.module.data
            if action == "grant":
                registry.grant_module(role.name, code, actor=who)
                text = _(
                    "Role ${role} now grants ${module}.",
                    mapping={"role": role.name, "module": code},
                )
            else:
                registry.revoke_module(role.name, code, actor=who)
                text = _(
                    "Role ${role} no longer grants ${module}.",
                    mapping={"role": role.name, "module": code},
                )
            return _flash_back(request, text, "admin.role", name=role.name)
        if action == "delete":
            deleted = registry.delete_role(role.name, actor=who)
            return _flash_back(
                request,
                _("Role ${name} deleted.", mapping={"name": deleted.key}),
                "admin.roles",
            )
        if action not in ("rename", "grant", "revoke"):
            raise HTTPBadRequest()
    except NotFound:
        message = _("That module does not exist (any more).")
    except Refused as exc:
        message = _field_error(rename, exc) if rename is not None else refusal(exc)
    request.response.status_int = 400
    return _role_page(request, role, message=message, rename=rename, grant=grant)


# Modules


def _modules_page(request, form: ModuleForm, message=None) -> dict:
    return {
        "page": request.service(IReports).modules(
            listing(request, MODULE_SORTS, "code")
        ),
        "form": form,
        "message": message,
        "can_act": _can_act(request),
    }


@view_config(
    route_name="admin.modules",
    renderer="admin/modules.jinja2",
    permission=Permission.REGISTRY_READ,
    request_method=("GET", "HEAD"),
)
def modules(request):
    return _modules_page(request, ModuleForm())


@view_config(
    route_name="admin.modules",
    renderer="admin/modules.jinja2",
    permission=Permission.REGISTRY_ACT,
    request_method="POST",
    require_methods=["GET", "HEAD", "POST"],
)
def module_create(request):
    form = ModuleForm(request.POST)
    message = None
    if form.validate():
        try:
            module = request.service(IModuleRegistry).create_module(
                form.code.data.strip(),
                name_ms=form.name_ms.data,
                name_en=form.name_en.data,
                actor=actor(request),
            )
        except Refused as exc:
            message = _field_error(form, exc)
        else:
            return _flash_back(
                request,
                _("Module ${code} created.", mapping={"code": module.code}),
                "admin.module",
                code=module.code,
            )
    request.response.status_int = 400
    return _modules_page(request, form, message)


def _module_or_404(request):
    try:
        return request.service(IModuleRegistry).find_module(request.matchdict["code"])
    except NotFound:
        raise HTTPNotFound() from None


def _module_page(request, module, *, message=None, rename=None) -> dict:
    return {
        "module": module,
        "roles": sorted(module.roles, key=lambda role: role.name.lower()),
        "sps": request.service(IReports).service_providers(
            parse_listing({}, sorts=SP_SORTS, default_sort="entity_id"),
            module=module.code,
        ),
        "rename": rename or RenameForm(),
        "message": message,
        "can_act": _can_act(request),
    }


@view_config(
    route_name="admin.module",
    renderer="admin/module.jinja2",
    permission=Permission.REGISTRY_READ,
    request_method=("GET", "HEAD"),
)
def module(request):
    return _module_page(request, _module_or_404(request))


@view_config(
    route_name="admin.module",
    renderer="admin/module.jinja2",
    permission=Permission.REGISTRY_ACT,
    request_method="POST",
    require_methods=["GET", "HEAD", "POST"],
)
def module_act(request):
    module = _module_or_404(request)
    registry = request.service(IModuleRegistry)
    action = request.POST.get("action")
    rename = RenameForm(request.POST) if action == "rename" else None
    message = None
    try:
        if action == "rename" and rename is not None and rename.validate():
            old = registry.rename_module(
                module.code, rename.new.data.strip(), actor=actor(request)
            )
            return _flash_back(
                request,
                _(
                    "Module ${old} is now ${new}.",
                    mapping={"old": old, "new": module.code},
                ),
                "admin.module",
                code=module.code,
            )
        if action == "delete":
            deleted = registry.delete_module(module.code, actor=actor(request))
            return _flash_back(
                request,
                _("Module ${code} deleted.", mapping={"code": deleted.key}),
                "admin.modules",
            )
        if action != "rename":
            raise HTTPBadRequest()
    except Refused as exc:
        message = _field_error(rename, exc) if rename is not None else refusal(exc)
    request.response.status_int = 400
    return _module_page(request, module, message=message, rename=rename)


# Service providers


@view_config(
    route_name="admin.sps",
    renderer="admin/sps.jinja2",
    permission=Permission.REGISTRY_READ,
    require_methods=["GET", "HEAD"],
)
def sps(request):
    search = request.GET.get("q", "").strip()[:200] or None
    module = request.GET.get("module", "").strip()[:64] or None
    page = request.service(IReports).service_providers(
        listing(request, SP_SORTS, "entity_id", filters=("q", "module")),
        search=search,
        module=module,
    )
    extra = {key: value for key, value in (("q", search), ("module", module)) if value}
    return {
        "page": page,
        "q": search or "",
        "module": module,
        "extra": extra,
        "can_act": _can_act(request),
    }


def _sp_or_404(request):
    entity_id = request.GET.get("e", "")
    try:
        return request.service(IServiceProviders).find(entity_id)
    except NotFound:
        raise HTTPNotFound() from None


def _policy_form(sp, data=None) -> PolicyForm:
    from idp.saml.registry import NAME_ID_FORMATS, RELEASABLE

    form = PolicyForm(data)
    form.attributes.choices = [(name, name) for name in RELEASABLE]
    form.name_id_format.choices = [(key, key) for key in NAME_ID_FORMATS]
    if data is None:
        form.attributes.data = list(sp.attributes_released or [])
        form.name_id_format.data = next(
            (k for k, v in NAME_ID_FORMATS.items() if v == sp.name_id_format),
            "persistent",
        )
        form.sign_response.data = sp.sign_response
        form.sign_assertion.data = sp.sign_assertion
        form.encrypt_assertion.data = sp.encrypt_assertion
    return form


def _sp_page(request, sp, *, policy=None, message=None, technical=None) -> dict:
    from idp.saml.registry import RELEASABLE, usable_metadata

    metadata = usable_metadata(sp)
    return {
        "sp": sp,
        "metadata": metadata,
        "last_sso": request.service(IReports).last_sso(sp),
        "policy": policy or _policy_form(sp),
        "releasable": RELEASABLE,
        "message": message,
        "technical": technical,
        "can_act": _can_act(request),
    }


@view_config(
    route_name="admin.sp",
    renderer="admin/sp.jinja2",
    permission=Permission.REGISTRY_READ,
    request_method=("GET", "HEAD"),
)
def sp(request):
    return _sp_page(request, _sp_or_404(request))


@view_config(
    route_name="admin.sp",
    renderer="admin/sp.jinja2",
    permission=Permission.REGISTRY_ACT,
    request_method="POST",
    require_methods=["GET", "HEAD", "POST"],
)
def sp_act(request):
    sp = _sp_or_404(request)
    service = request.service(IServiceProviders)
    action = request.POST.get("action")
    policy = None
    try:
        if action in ("enable", "disable"):
            service.set_enabled(sp.entity_id, action == "enable", actor=actor(request))
            text = (
                _("The service provider is enabled.")
                if action == "enable"
                else _("The service provider is disabled: nobody can sign in to it.")
            )
        elif action == "policy":
            policy = _policy_form(sp, request.POST)
            service.set_policy(sp.entity_id, policy.changes(), actor=actor(request))
            text = _("The release policy is saved.")
        else:
            raise HTTPBadRequest()
    except Refused as exc:
        request.response.status_int = 400
        return _sp_page(
            request,
            sp,
            policy=policy,
            message=refusal(exc),
            technical=exc.message if exc.code == "sp.refused" else None,
        )
    request.session.flash(text)
    return HTTPSeeOther(request.route_path("admin.sp", _query={"e": sp.entity_id}))


@view_config(
    route_name="admin.sp_remove",
    renderer="admin/sp_remove.jinja2",
    permission=Permission.REGISTRY_ACT,
    require_methods=["GET", "HEAD", "POST"],
)
def sp_remove(request):
    """Removal shows what goes with the SP first; the POST confirms that."""
    sp = _sp_or_404(request)
    service = request.service(IServiceProviders)
    removal = service.removal(sp.entity_id)
    token = _registration_token(removal)
    if request.method == "POST":
        if request.POST.get("registration") != token:
            message = refusal(Refused("sp.registered_again", "changed"))
            request.response.status_int = 409
            return {"sp": sp, "removal": removal, "token": token, "message": message}
        service.remove(sp.entity_id, confirmed=removal, actor=actor(request))
        request.session.flash(
            _("${entity} was removed.", mapping={"entity": sp.entity_id})
        )
        return HTTPSeeOther(request.route_path("admin.sps"))
    return {"sp": sp, "removal": removal, "token": token, "message": None}


def _registration_token(removal) -> str:
    """Which registration the admin saw: the SP's row id and creation time."""
    row_id, created = removal.registration
    return f"{row_id}:{created.isoformat()}"


# Uploading metadata: preview (the import, rolled back), then confirm


def _module_choices(request):
    return [("", "—")] + [
        (m.code, m.code) for m in request.service(IModuleRegistry).modules()
    ]


@view_config(
    route_name="admin.sp_upload",
    renderer="admin/sp_upload.jinja2",
    permission=Permission.REGISTRY_ACT,
    require_methods=["GET", "HEAD", "POST"],
)
def sp_upload(request):
    form = UploadForm(request.POST if request.method == "POST" else None)
    form.module.choices = _module_choices(request)
    if request.method != "POST":
        return {"form": form, "preview": None, "message": None, "technical": None}
    if request.POST.get("step") == "confirm":
        return _confirm_upload(request, form)
    if not form.validate():
        request.response.status_int = 400
        return {"form": form, "preview": None, "message": None, "technical": None}
    return _preview(request, form, form.data, module=form.module.data or None)


def _previewed(request, data: bytes, module: str | None) -> str:
    """The seal of a preview: these bytes and module, shown to this admin.

    The confirm step carries the metadata back; it applies only with the
    seal the preview gave, so nothing the server did not show this admin as
    a diff (another file, bytes edited in the page) can be applied.
    """
    key = hmac.new(
        request.registry.settings["idp.hmac_key"].encode(),
        b"idp admin sp preview v1",
        "sha256",
    ).digest()
    digest = hashlib.sha256(data).hexdigest()
    message = f"{request.identity.id}:{module or ''}:{digest}"
    return hmac.new(key, message.encode(), "sha256").hexdigest()


def _preview(request, form, data: bytes, *, module, replace=False, hosts=()):
    service = request.service(IServiceProviders)
    confirm = ConfirmImportForm()
    confirm.metadata_b64.data = base64.b64encode(data).decode("ascii")
    confirm.seal.data = _previewed(request, data, module)
    confirm.module.data = module or ""
    confirm.replace.data = replace
    refused = None
    preview = None
    try:
        preview = service.preview_import(
            data,
            module_code=module,
            replace=replace,
            confirm_hosts=hosts,
            actor=actor(request),
        )
    except Refused as exc:
        refused = exc
        request.response.status_int = 400
        if exc.code == "sp.trust_changed" and not replace:
            # Show what replacing would do, for the admin to tick "replace"
            # knowingly; a further refusal (a host claim) is the one shown.
            try:
                preview = service.preview_import(
                    data,
                    module_code=module,
                    replace=True,
                    confirm_hosts=hosts,
                    actor=actor(request),
                )
            except Refused as further:
                refused = further
    return {
        "form": form,
        "confirm": confirm,
        "preview": preview,
        "refused": refused,
        "claims": refused.params.get("claims") if refused is not None else None,
        "changes": refused.params.get("changes") if refused is not None else None,
        "message": refusal(refused) if refused is not None else None,
        "technical": refused.message
        if refused is not None and refused.code == "sp.refused"
        else None,
    }


def _confirm_upload(request, form):
    confirm = ConfirmImportForm(request.POST)
    try:
        data = base64.b64decode(confirm.metadata_b64.data or "", validate=True)
    except (binascii.Error, ValueError):
        raise HTTPBadRequest() from None
    module = confirm.module.data or None
    if not data or not hmac.compare_digest(
        _previewed(request, data, module), confirm.seal.data or ""
    ):
        raise HTTPBadRequest()
    replace = bool(confirm.replace.data)
    hosts = [h for h in request.POST.getall("host") if h.strip()][:20]
    try:
        imported = request.service(IServiceProviders).import_metadata(
            data,
            module_code=module,
            replace=replace,
            confirm_hosts=hosts,
            actor=actor(request),
        )
    except Refused:
        # The registry changed since the preview: show the new preview.
        return _preview(
            request, form, data, module=module, replace=replace, hosts=hosts
        )
    outcomes = {
        "registered": _("${entity} is registered."),
        "updated": _("${entity}'s metadata is updated."),
        "unchanged": _("${entity} already had this metadata; nothing changed."),
    }
    request.session.flash(
        _(outcomes[imported.outcome], mapping={"entity": imported.sp.entity_id})
    )
    return HTTPSeeOther(
        request.route_path("admin.sp", _query={"e": imported.sp.entity_id})
    )


# Sources, quarantine, pending changes


@view_config(
    route_name="admin.sources",
    renderer="admin/sources.jinja2",
    permission=Permission.REGISTRY_READ,
    request_method=("GET", "HEAD"),
)
def sources(request):
    return _sources_page(request)


@view_config(
    route_name="admin.sources",
    renderer="admin/sources.jinja2",
    permission=Permission.REGISTRY_ACT,
    request_method="POST",
    require_methods=["GET", "HEAD", "POST"],
)
def source_approve(request):
    """Apply a trust change a source holds (SAML-30), as ``source approve``."""
    source = request.POST.get("source", "")
    entity_id = request.POST.get("entity_id", "")
    if not source or not entity_id:
        raise HTTPBadRequest()
    try:
        request.service(IServiceProviders).approve_change(
            source, entity_id, actor=actor(request)
        )
    except NotFound:
        raise HTTPNotFound() from None
    except Refused as exc:
        request.response.status_int = 409
        return _sources_page(request, refusal(exc), exc.message)
    return _flash_back(
        request,
        _("The change to ${entity} is applied.", mapping={"entity": entity_id}),
        "admin.sources",
    )


def _sources_page(request, message=None, technical=None) -> dict:
    reports = request.service(IReports)
    # Two lists on one page: each its own page and sort parameters would
    # double the query string's grammar; the quarantine is the long one.
    quarantine = reports.quarantine(
        listing(request, QUARANTINE_SORTS, "last_seen", descending=True)
    )
    pending = reports.pending_changes(
        parse_listing({}, sorts=PENDING_SORTS, default_sort="created")
    )
    return {
        "sources": reports.sources(),
        "quarantine": quarantine,
        "pending": pending,
        "message": message,
        "technical": technical,
        "can_act": _can_act(request),
    }
