"""Which package may import what: the layering rules, read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import idp

PACKAGE = Path(idp.__file__).parent
SAML = PACKAGE / "saml"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def top_level(modules: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


def sources(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def test_only_idp_saml_imports_pysaml2_or_xmlsec():
    outside = {
        str(path.relative_to(PACKAGE.parent)): sorted(
            top_level(imported_modules(path)) & {"saml2", "xmlsec"}
        )
        for path in sources(PACKAGE)
        if SAML not in path.parents
    }
    assert {path: names for path, names in outside.items() if names} == {}


def test_the_scan_sees_lazy_imports():
    """The control: an import inside a function counts as much as one at the top."""
    assert "saml2.mdstore" in imported_modules(SAML / "sp_metadata.py")
    assert "xmlsec" in imported_modules(SAML / "crypto.py")


@pytest.mark.parametrize("module", ["xml.py", "errors.py"])
def test_the_saml_modules_every_layer_reads_need_no_pysaml2(module):
    """Namespaces and refusals depend on no SAML library.

    Any module may import them: ``idp.saml.sp_metadata``, which idp-admin's SP
    commands load, takes its namespaces from ``idp.saml.xml`` without pulling
    in pysaml2's schemas (tests/functional/test_cli_startup.py runs them).
    """
    assert not top_level(imported_modules(SAML / module)) & {"saml2", "xmlsec"}
