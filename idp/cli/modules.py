"""``module create|list`` and ``role create|list|grant-module|revoke-module``.

A module is a MOEIS system users reach by role; a role grants one or more
modules. Each command runs in one transaction on a request wired exactly as
a web request is (:func:`app_request`), and prints only after it committed.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from idp.cli.common import app_request
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
    from idp.cli import CommandError

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
    from idp.cli import CommandError

    role = dbsession.scalars(select(Role).where(Role.name == name)).one_or_none()
    if role is None:
        raise CommandError(f"no role named {name!r} (see 'role list')")
    return role


def find_module(dbsession, code: str) -> Module:
    from idp.cli import CommandError

    module = dbsession.scalars(select(Module).where(Module.code == code)).one_or_none()
    if module is None:
        raise CommandError(f"no module with code {code!r} (see 'module list')")
    return module


def _names(row) -> str:
    return f"{row.display_name_ms} / {row.display_name_en}"


def _add_unique(dbsession, row, taken: str) -> None:
    """Insert ``row`` in a SAVEPOINT; a unique violation becomes ``taken``."""
    from idp.cli import CommandError

    try:
        with dbsession.begin_nested():
            dbsession.add(row)
    except IntegrityError:
        raise CommandError(taken) from None


# Parsers


def register(groups) -> None:
    _register_module(groups)
    _register_role(groups)


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


# Handlers: each prints only once its transaction has committed.


def module_create(args) -> int:
    from idp.cli import CommandError

    name_ms = label("--name-ms", args.name_ms)
    name_en = label("--name-en", args.name_en)
    taken = f"a module with code {args.code!r} already exists"
    with app_request(args.config_uri) as request:
        dbsession = request.dbsession
        if dbsession.scalars(select(Module.id).where(Module.code == args.code)).first():
            raise CommandError(taken)
        module = Module(
            code=args.code, display_name_ms=name_ms, display_name_en=name_en
        )
        _add_unique(dbsession, module, taken)
    print(f"created module {args.code}: {name_ms} / {name_en}")
    return 0


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


def role_create(args) -> int:
    from idp.cli import CommandError

    name_ms = label("--name-ms", args.name_ms)
    name_en = label("--name-en", args.name_en)
    description = args.description or ""
    if has_control_characters(description.replace("\n", " ")):
        raise CommandError("--description: remove the control characters")
    if len(description) > DESCRIPTION_MAX:
        raise CommandError(f"--description: at most {DESCRIPTION_MAX} characters")
    taken = f"a role named {args.name!r} already exists"
    with app_request(args.config_uri) as request:
        dbsession = request.dbsession
        if dbsession.scalars(select(Role.id).where(Role.name == args.name)).first():
            raise CommandError(taken)
        role = Role(
            name=args.name,
            display_name_ms=name_ms,
            display_name_en=name_en,
            description=description.strip(),
        )
        _add_unique(dbsession, role, taken)
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


def role_grant_module(args) -> int:
    with app_request(args.config_uri) as request:
        role = find_role(request.dbsession, args.role)
        module = find_module(request.dbsession, args.module)
        already = module in role.modules
        if not already:
            role.modules.append(module)
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
    if granted:
        print(f"role {role.name} no longer grants module {module.code}")
    else:
        print(f"role {role.name} did not grant module {module.code}; nothing changed")
    return 0
