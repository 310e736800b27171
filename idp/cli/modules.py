"""``module create|list|rename|delete`` and
``role create|list|rename|delete|grant-module|revoke-module``.

A module is a MOEIS system users reach by role; a role grants one or more
modules. The rules (codes and names unique whatever their case, a module or
role refused deletion while in use) and the audit events live in
:class:`idp.services.modules.ModuleRegistry`, which the admin console calls
too; these commands parse, call it with the operator as the actor (``"by":
"idp-admin"`` in each event's detail) and print. Each runs in one
transaction on a request wired exactly as a web request is
(:func:`app_request`), and prints only after it committed.
"""

from __future__ import annotations

from idp.cli.common import app_request, refusals

# The row lock of 'module delete' and 'role delete', which
# tests/functional/test_cli_registry.py races against a grant.
from idp.services.modules import locked as _locked  # noqa: F401

#: The services' field names, as these commands' options spell them.
OPTIONS = {
    "name_ms": "--name-ms",
    "name_en": "--name-en",
    "description": "--description",
    "code": "CODE",
    "name": "NAME",
    "new": "NEW",
}


def code_argument(value: str) -> str:
    """An argparse type for module codes and role names."""
    import argparse

    from idp.services.modules import CODE_PATTERN, CODE_RULE

    if not CODE_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r}: {CODE_RULE}")
    return value


def _registry(request):
    from idp.services.interfaces import IModuleRegistry

    return request.service(IModuleRegistry)


def _actor():
    from idp.services.actor import Actor

    return Actor.command_line()


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


def _labels(args) -> tuple[str, str]:
    """``--name-ms`` and ``--name-en``, checked before the database is opened."""
    from idp.services.modules import clean_label

    with refusals(OPTIONS):
        return clean_label("name_ms", args.name_ms), clean_label(
            "name_en", args.name_en
        )


def module_create(args) -> int:
    name_ms, name_en = _labels(args)
    with app_request(args.config_uri, OPTIONS) as request:
        _registry(request).create_module(
            args.code, name_ms=name_ms, name_en=name_en, actor=_actor()
        )
    print(f"created module {args.code}: {name_ms} / {name_en}")
    return 0


def module_list(args) -> int:
    from idp.services.modules import names

    with app_request(args.config_uri) as request:
        lines = [
            f"{module.code}  {names(module)}  roles: "
            + (", ".join(sorted(role.name for role in module.roles)) or "-")
            for module in _registry(request).modules()
        ]
    print("\n".join(lines) if lines else "no modules yet ('module create' adds one)")
    return 0


def module_rename(args) -> int:
    with app_request(args.config_uri, OPTIONS) as request:
        old = _registry(request).rename_module(args.old, args.new, actor=_actor())
    print(f"renamed module {old} to {args.new}")
    return 0


def module_delete(args) -> int:
    with app_request(args.config_uri, OPTIONS) as request:
        deleted = _registry(request).delete_module(args.key, actor=_actor())
    print(f"deleted module {deleted.key}: {deleted.names}")
    return 0


def role_create(args) -> int:
    from idp.services.modules import clean_description

    name_ms, name_en = _labels(args)
    with refusals(OPTIONS):
        clean_description(args.description)
    with app_request(args.config_uri, OPTIONS) as request:
        _registry(request).create_role(
            args.name,
            name_ms=name_ms,
            name_en=name_en,
            description=args.description,
            actor=_actor(),
        )
    print(f"created role {args.name}: {name_ms} / {name_en}")
    return 0


def role_list(args) -> int:
    from idp.forms import collapse_spaces
    from idp.services.modules import names

    with app_request(args.config_uri) as request:
        lines = []
        for role in _registry(request).roles():
            codes = sorted(module.code for module in role.modules)
            lines.append(
                f"{role.name}  {names(role)}  modules: " + (", ".join(codes) or "-")
            )
            if role.description:
                lines.append(f"    {collapse_spaces(role.description)}")
    print("\n".join(lines) if lines else "no roles yet ('role create' adds one)")
    return 0


def role_rename(args) -> int:
    with app_request(args.config_uri, OPTIONS) as request:
        old = _registry(request).rename_role(args.old, args.new, actor=_actor())
    print(f"renamed role {old} to {args.new}")
    # isMemberOf carries role names: a service matching on the old one must
    # be told before its users lose access there.
    print(f"services now receive {args.new} instead of {old} in isMemberOf")
    return 0


def role_delete(args) -> int:
    with app_request(args.config_uri, OPTIONS) as request:
        deleted = _registry(request).delete_role(args.key, actor=_actor())
    print(f"deleted role {deleted.key}: {deleted.names}")
    if deleted.modules:
        print(f"it granted {', '.join(deleted.modules)}; those modules remain")
    return 0


def role_grant_module(args) -> int:
    return _grant(args, grant=True)


def role_revoke_module(args) -> int:
    return _grant(args, grant=False)


def _grant(args, *, grant: bool) -> int:
    with app_request(args.config_uri, OPTIONS) as request:
        registry = _registry(request)
        change = registry.grant_module if grant else registry.revoke_module
        changed = change(args.role, args.module, actor=_actor())
        role = registry.find_role(args.role).name
        module = registry.find_module(args.module).code
    if grant:
        done = "now grants" if changed else "already grants"
    else:
        done = "no longer grants" if changed else "did not grant"
    suffix = "" if changed or grant else "; nothing changed"
    print(f"role {role} {done} module {module}{suffix}")
    return 0
