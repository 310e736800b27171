"""``module create|list|rename|delete`` and
``role create|list|rename|delete|grant-module|revoke-module``.

A module is a MOEIS system users reach by role; a role grants one or more
modules. Each command runs in one transaction on a request wired exactly as
a web request is (:func:`app_request`), and prints only after it committed.
Every change is audited (``"by": "idp-admin"`` in the detail). Codes and
names are unique whatever their case, which the database enforces
(migration 0007), and are found whatever their case.
"""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from idp.cli.common import CommandError, app_request
from idp.forms import collapse_spaces, has_control_characters
from idp.models import Module, Role

#: Module codes and role names: what SPs and SAML attributes carry.
CODE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
LABEL_MAX = 200
DESCRIPTION_MAX = 2000


def code_argument(value: str) -> str:
    """An argparse type for module codes and role names."""
    import argparse

    if not CODE_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def label(option: str, value: str | None, *, required: bool = True) -> str | None:
    """``value`` with runs of spaces collapsed; CommandError naming ``option``."""
    if value is None or not value.strip():
        if required:
            raise CommandError(f"{option}: must not be empty")
        return None
    if has_control_characters(value):
        raise CommandError(f"{option}: remove the line breaks and control characters")
    text = collapse_spaces(value)
    if len(text) > LABEL_MAX:
        raise CommandError(f"{option}: at most {LABEL_MAX} characters")
    return text


def find_role(dbsession, name: str) -> Role:
    role = dbsession.scalars(
        select(Role).where(func.lower(Role.name) == name.lower())
    ).one_or_none()
    if role is None:
        raise CommandError(f"no role named {name!r} (see 'role list')")
    return role


def find_module(dbsession, code: str) -> Module:
    module = dbsession.scalars(
        select(Module).where(func.lower(Module.code) == code.lower())
    ).one_or_none()
    if module is None:
        raise CommandError(f"no module with code {code!r} (see 'module list')")
    return module


def _names(row) -> str:
    return f"{row.display_name_ms} / {row.display_name_en}"


def _add_unique(dbsession, row, taken: str) -> None:
    """Insert ``row`` in a SAVEPOINT; a unique violation becomes ``taken``."""
    _write_unique(dbsession, lambda: dbsession.add(row), taken)


def _write_unique(dbsession, change, taken: str) -> None:
    """Apply ``change`` and flush in a SAVEPOINT; a unique violation is ``taken``.

    The SELECT before it gives the friendly message; this is what holds when
    two commands race (the unique indexes on lower(code) and lower(name)).
    """
    try:
        with dbsession.begin_nested():
            change()
            dbsession.flush()
    except IntegrityError:
        raise CommandError(taken) from None


def _audit(request, event: str, **detail) -> None:
    from idp.services.interfaces import IAuditLog

    request.service(IAuditLog).record(event, detail={"by": "idp-admin", **detail})


# Parsers


def register(groups) -> None:
    _register_module(groups)
    _register_role(groups)


def _rename_and_delete(commands, kind: str, rename, delete, refused: str) -> None:
    rename_parser = commands.add_parser(
        "rename", help=f"change a {kind}'s {_KEY[kind]} (audited)"
    )
    rename_parser.add_argument("old", type=code_argument, metavar="OLD")
    rename_parser.add_argument("new", type=code_argument, metavar="NEW")
    rename_parser.set_defaults(handler=rename)
    delete_parser = commands.add_parser(
        "delete", help=f"remove a {kind}; refused while {refused} (audited)"
    )
    delete_parser.add_argument("key", type=code_argument, metavar=_KEY[kind].upper())
    delete_parser.set_defaults(handler=delete)


_KEY = {"module": "code", "role": "name"}


def _register_module(groups) -> None:
    parser = groups.add_parser(
        "module", help="MOEIS modules (the systems users reach by role)"
    )
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)
    create_parser = commands.add_parser("create", help="add a module")
    create_parser.add_argument(
        "code", type=code_argument, metavar="CODE", help="short code, e.g. emis"
    )
    create_parser.add_argument(
        "--name-ms", required=True, metavar="TEXT", help="name in Malay"
    )
    create_parser.add_argument(
        "--name-en", required=True, metavar="TEXT", help="name in English"
    )
    create_parser.set_defaults(handler=module_create)
    list_parser = commands.add_parser(
        "list", help="every module and the roles that grant it"
    )
    list_parser.set_defaults(handler=module_list)
    _rename_and_delete(
        commands,
        "module",
        module_rename,
        module_delete,
        "a role grants it or an SP belongs to it",
    )


def _register_role(groups) -> None:
    parser = groups.add_parser("role", help="roles, and the modules each grants")
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)
    create_parser = commands.add_parser("create", help="add a role")
    create_parser.add_argument(
        "name", type=code_argument, metavar="NAME", help="short name, e.g. teacher"
    )
    create_parser.add_argument(
        "--name-ms", required=True, metavar="TEXT", help="display name in Malay"
    )
    create_parser.add_argument(
        "--name-en", required=True, metavar="TEXT", help="display name in English"
    )
    create_parser.add_argument(
        "--description", metavar="TEXT", help="what the role is for (optional)"
    )
    create_parser.set_defaults(handler=role_create)
    list_parser = commands.add_parser(
        "list", help="every role and the modules it grants"
    )
    list_parser.set_defaults(handler=role_list)
    for action, handler, text in (
        ("grant-module", role_grant_module, "let a role reach a module"),
        ("revoke-module", role_revoke_module, "stop a role reaching a module"),
    ):
        action_parser = commands.add_parser(action, help=text)
        action_parser.add_argument(
            "role", type=code_argument, metavar="ROLE", help="role name"
        )
        action_parser.add_argument(
            "module", type=code_argument, metavar="MODULE", help="module code"
        )
        action_parser.set_defaults(handler=handler)
    _rename_and_delete(commands, "role", role_rename, role_delete, "a user holds it")


# Handlers: each prints only once its transaction has committed.


def module_create(args) -> int:
    name_ms = label("--name-ms", args.name_ms)
    name_en = label("--name-en", args.name_en)
    with app_request(args.config_uri) as request:
        dbsession = request.dbsession
        taken = _module_taken(dbsession, args.code)
        if taken:
            raise CommandError(taken)
        module = Module(
            code=args.code, display_name_ms=name_ms, display_name_en=name_en
        )
        _add_unique(dbsession, module, _taken("a module with code", args.code))
        _audit(
            request,
            "module.created",
            code=args.code,
            name_ms=name_ms,
            name_en=name_en,
        )
    print(f"created module {args.code}: {name_ms} / {name_en}")
    return 0


def _taken(what: str, key: str, existing: str | None = None) -> str:
    if existing is None or existing == key:
        return f"{what} {key!r} already exists"
    return f"{what} {existing!r} already exists ({key!r} differs only in case)"


def _module_taken(dbsession, code: str, *, but=None) -> str | None:
    query = select(Module.code).where(func.lower(Module.code) == code.lower())
    if but is not None:
        query = query.where(Module.id != but.id)
    existing = dbsession.scalars(query).first()
    return None if existing is None else _taken("a module with code", code, existing)


def _role_taken(dbsession, name: str, *, but=None) -> str | None:
    query = select(Role.name).where(func.lower(Role.name) == name.lower())
    if but is not None:
        query = query.where(Role.id != but.id)
    existing = dbsession.scalars(query).first()
    return None if existing is None else _taken("a role named", name, existing)


def module_list(args) -> int:
    with app_request(args.config_uri) as request:
        modules = request.dbsession.scalars(select(Module).order_by(Module.code)).all()
        lines = [
            f"{module.code}  {_names(module)}  roles: "
            + (", ".join(sorted(role.name for role in module.roles)) or "-")
            for module in modules
        ]
    print("\n".join(lines) if lines else "no modules yet ('module create' adds one)")
    return 0


def module_rename(args) -> int:
    with app_request(args.config_uri) as request:
        dbsession = request.dbsession
        module = find_module(dbsession, args.old)
        old = module.code
        if old == args.new:
            raise CommandError(f"module {old} is already called {args.new}")
        taken = _module_taken(dbsession, args.new, but=module)
        if taken:
            raise CommandError(taken)

        def change():
            module.code = args.new

        _write_unique(dbsession, change, _taken("a module with code", args.new))
        _audit(request, "module.renamed", old=old, new=args.new)
    print(f"renamed module {old} to {args.new}")
    return 0


def module_delete(args) -> int:
    from idp.models import ServiceProvider

    with app_request(args.config_uri) as request:
        dbsession = request.dbsession
        module = _locked(dbsession, find_module(dbsession, args.key))
        roles = sorted(role.name for role in module.roles)
        sps = dbsession.scalars(
            select(ServiceProvider.entity_id)
            .where(ServiceProvider.module_id == module.id)
            .order_by(ServiceProvider.entity_id)
        ).all()
        uses = []
        if roles:
            uses.append(
                f"granted by role{'s' if len(roles) > 1 else ''} {', '.join(roles)} "
                "('role revoke-module' first)"
            )
        if sps:
            uses.append(
                f"{len(sps)} SP{'s' if len(sps) > 1 else ''} belong to it: "
                f"{', '.join(sps)} ('sp remove' or re-import with another --module)"
            )
        if uses:
            raise CommandError(f"module {module.code} is in use: {'; '.join(uses)}")
        code, names = module.code, _names(module)
        dbsession.delete(module)
        dbsession.flush()
        _audit(request, "module.deleted", code=code)
    print(f"deleted module {code}: {names}")
    return 0


def _locked(dbsession, row):
    """``row`` again, locked until commit, so no grant can slip in meanwhile.

    A grant's insert must lock the row it references (PostgreSQL's KEY SHARE
    against this FOR UPDATE); SQLite already runs one writer at a time. So a
    grant made while a delete checks is either seen by the check or refused
    by the foreign key afterwards, never silently cascaded away.
    """
    return dbsession.scalars(
        select(type(row))
        .where(type(row).id == row.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def role_create(args) -> int:
    name_ms = label("--name-ms", args.name_ms)
    name_en = label("--name-en", args.name_en)
    description = args.description or ""
    if has_control_characters(description.replace("\n", " ")):
        raise CommandError("--description: remove the control characters")
    if len(description) > DESCRIPTION_MAX:
        raise CommandError(f"--description: at most {DESCRIPTION_MAX} characters")
    with app_request(args.config_uri) as request:
        dbsession = request.dbsession
        taken = _role_taken(dbsession, args.name)
        if taken:
            raise CommandError(taken)
        role = Role(
            name=args.name,
            display_name_ms=name_ms,
            display_name_en=name_en,
            description=description.strip(),
        )
        _add_unique(dbsession, role, _taken("a role named", args.name))
        _audit(
            request,
            "role.created",
            name=args.name,
            name_ms=name_ms,
            name_en=name_en,
        )
    print(f"created role {args.name}: {name_ms} / {name_en}")
    return 0


def role_list(args) -> int:
    with app_request(args.config_uri) as request:
        roles = request.dbsession.scalars(select(Role).order_by(Role.name)).all()
        lines = []
        for role in roles:
            codes = sorted(module.code for module in role.modules)
            lines.append(
                f"{role.name}  {_names(role)}  modules: " + (", ".join(codes) or "-")
            )
            if role.description:
                lines.append(f"    {collapse_spaces(role.description)}")
    print("\n".join(lines) if lines else "no roles yet ('role create' adds one)")
    return 0


def role_rename(args) -> int:
    with app_request(args.config_uri) as request:
        dbsession = request.dbsession
        role = find_role(dbsession, args.old)
        old = role.name
        if old == args.new:
            raise CommandError(f"role {old} is already called {args.new}")
        taken = _role_taken(dbsession, args.new, but=role)
        if taken:
            raise CommandError(taken)

        def change():
            role.name = args.new

        _write_unique(dbsession, change, _taken("a role named", args.new))
        _audit(request, "role.renamed", old=old, new=args.new)
    print(f"renamed role {old} to {args.new}")
    # isMemberOf carries role names: a service matching on the old one must
    # be told before its users lose access there.
    print(f"services now receive {args.new} instead of {old} in isMemberOf")
    return 0


def role_delete(args) -> int:
    from idp.models.role import user_roles

    with app_request(args.config_uri) as request:
        dbsession = request.dbsession
        role = _locked(dbsession, find_role(dbsession, args.key))
        holders = dbsession.scalar(
            select(func.count())
            .select_from(user_roles)
            .where(user_roles.c.role_id == role.id)
        )
        if holders:
            raise CommandError(
                f"role {role.name} is in use: {holders} "
                f"user{'s hold' if holders > 1 else ' holds'} it "
                "('user revoke' first)"
            )
        name, names = role.name, _names(role)
        modules = sorted(module.code for module in role.modules)
        dbsession.delete(role)
        dbsession.flush()
        _audit(request, "role.deleted", name=name, modules=modules)
    print(f"deleted role {name}: {names}")
    if modules:
        print(f"it granted {', '.join(modules)}; those modules remain")
    return 0


def role_grant_module(args) -> int:
    with app_request(args.config_uri) as request:
        role = find_role(request.dbsession, args.role)
        module = find_module(request.dbsession, args.module)
        already = module in role.modules
        if not already:
            role.modules.append(module)
            request.dbsession.flush()
            _audit(request, "role.module_granted", role=role.name, module=module.code)
    if already:
        print(f"role {role.name} already grants module {module.code}")
    else:
        print(f"role {role.name} now grants module {module.code}")
    return 0


def role_revoke_module(args) -> int:
    with app_request(args.config_uri) as request:
        role = find_role(request.dbsession, args.role)
        module = find_module(request.dbsession, args.module)
        granted = module in role.modules
        if granted:
            role.modules.remove(module)
            request.dbsession.flush()
            _audit(request, "role.module_revoked", role=role.name, module=module.code)
    if granted:
        print(f"role {role.name} no longer grants module {module.code}")
    else:
        print(f"role {role.name} did not grant module {module.code}; nothing changed")
    return 0
