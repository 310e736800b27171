"""Which package may import which: the layering the style guide sets.

Read from the source (every ``import``, function-local ones included), not
from ``sys.modules``, so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__import__("idp").__path__[0])


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, as dotted names (relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def offences(files, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in files
        for name in imported_modules(path)
        if any(name == top or name.startswith(top + ".") for top in forbidden)
    )


def modules_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        # Services hold the domain rules; the web layer (who is signed in,
        # the browser's session, pages) calls them, never the reverse.
        ("services", ("idp.security", "idp.sessions", "idp.views", "idp.cli")),
        ("models", ("idp.services", "idp.security", "idp.sessions", "idp.views")),
    ],
)
def test_a_lower_layer_imports_nothing_above_it(layer, forbidden):
    assert offences(modules_under(layer), forbidden) == []


def test_only_the_saml_package_imports_pysaml2_or_xmlsec():
    outside = [
        path
        for path in PACKAGE.rglob("*.py")
        if PACKAGE / "saml" not in path.parents and "migrations" not in path.parts
    ]
    assert offences(outside, ("saml2", "xmlsec")) == []


@pytest.mark.parametrize("module", ["xml.py", "errors.py"])
def test_the_saml_modules_every_layer_reads_need_no_pysaml2(module):
    """Namespaces and refusals depend on no SAML library.

    Any module may import them: ``idp.saml.sp_metadata``, which idp-admin's SP
    commands load, takes its namespaces from ``idp.saml.xml`` without pulling
    in pysaml2's schemas (tests/functional/test_cli_startup.py runs them).
    """
    assert offences([PACKAGE / "saml" / module], ("saml2", "xmlsec")) == []


def test_the_check_sees_every_kind_of_import(tmp_path, monkeypatch):
    """The control: absolute, relative and function-local imports are all found."""
    folder = tmp_path / "idp" / "services"
    folder.mkdir(parents=True)
    module = folder / "probe.py"
    module.write_text(
        "from ..sessions import DatabaseSession\n"
        "def later():\n"
        "    import idp.security\n"
        "    from idp.views import reset\n"
    )
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path / "idp")
    assert offences([module], ("idp.security", "idp.sessions", "idp.views")) == [
        "idp/services/probe.py imports idp.security",
        "idp/services/probe.py imports idp.sessions",
        "idp/services/probe.py imports idp.sessions.DatabaseSession",
        "idp/services/probe.py imports idp.views",
        "idp/services/probe.py imports idp.views.reset",
    ]
