"""Every attack in the shared catalogue (SECURITY.md) has a test naming it.

A test names an ID in its function name (``test_saml_07_...``), on the
first line of its docstring (``SAML-07: ...``), or in the id of a case its
``pytest.mark.parametrize`` gives it (``ids=["saml_07"]`` or
``pytest.param(..., id="saml_07")``, read from the source: a literal list in
the test module or imported by name from a module under ``tests/``). Entries whose feature has
not been built yet are listed in :data:`PENDING` with the issue that brings
them; the list must shrink as they land (an entry both pending and tested
fails too), so it cannot hide a forgotten test.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT.parent / "shared" / "SECURITY.md"
TESTS = ROOT / "tests"

# ID -> why it has no test yet, naming the issue that brings it. Empty: every
# entry of the catalogue has its test. A new entry whose feature is not built
# yet goes here until it lands.
PENDING: dict[str, str] = {}

_ROW = re.compile(r"^\| ([A-Z]+-\d\d) \|(.*)$", re.MULTILINE)


def catalogue_ids() -> set[str]:
    text = CATALOGUE.read_text(encoding="utf-8")
    return {
        entry for entry, rest in _ROW.findall(text) if "retired" not in rest.lower()
    }


_NAME = re.compile(r"^test_([a-z]+)_(\d\d)(?:_|$)")
_DOC = re.compile(r"^([A-Z]+-\d\d)\b")
_CASE_ID = re.compile(r"^([a-z]+)_(\d\d)(?:_|$)")


def _module_names(tree: ast.Module) -> dict[str, ast.expr]:
    """A module's top-level ``NAME = value`` assignments, and the names it
    imports from modules under ``tests/`` (each read from that module)."""
    names: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                names[target.id] = node.value
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "tests."
        ):
            source = TESTS.joinpath(*node.module.split(".")[1:]).with_suffix(".py")
            if not source.exists():
                continue
            imported = _module_names(ast.parse(source.read_text(encoding="utf-8")))
            for alias in node.names:
                if alias.name in imported:
                    names[alias.asname or alias.name] = imported[alias.name]
    return names


def _resolve(node: ast.expr | None, names: dict[str, ast.expr]) -> ast.expr | None:
    seen = set()
    while isinstance(node, ast.Name) and node.id in names and node.id not in seen:
        seen.add(node.id)
        node = names[node.id]
    return node


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _string(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _case_ids(function: ast.FunctionDef, names: dict[str, ast.expr]) -> set[str]:
    """The ids ``pytest.mark.parametrize`` decorators give a test's cases."""
    found: set[str] = set()
    for decorator in function.decorator_list:
        call = _resolve(decorator, names)
        if not (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "parametrize"
        ):
            continue
        values = call.args[1] if len(call.args) > 1 else _keyword(call, "argvalues")
        for value in getattr(_resolve(values, names), "elts", ()):
            if (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Attribute)
                and value.func.attr == "param"
                and (case := _string(_keyword(value, "id")))
            ):
                found.add(case)
        ids = _resolve(_keyword(call, "ids"), names)
        found.update(
            case for element in getattr(ids, "elts", ()) if (case := _string(element))
        )
    return found


def ids_named_by_tests() -> set[str]:
    """IDs named by a test function's name, its docstring's first line or
    the ids of its parametrised cases."""
    found: set[str] = set()
    for path in TESTS.rglob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = _module_names(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if not node.name.startswith("test_"):
                continue
            match = _NAME.match(node.name)
            if match:
                found.add(f"{match[1].upper()}-{match[2]}")
            doc = ast.get_docstring(node)
            if doc and (match := _DOC.match(doc.strip())):
                found.add(match[1])
            for case in _case_ids(node, names):
                if match := _CASE_ID.match(case):
                    found.add(f"{match[1].upper()}-{match[2]}")
    return found


@pytest.fixture(scope="module")
def catalogue():
    if not CATALOGUE.exists():
        pytest.fail(f"the attack catalogue is missing: {CATALOGUE}")
    return catalogue_ids()


def test_every_catalogue_entry_has_a_test(catalogue):
    missing = sorted(catalogue - ids_named_by_tests() - PENDING.keys())
    assert not missing, f"catalogue entries without a test: {', '.join(missing)}"


def test_pending_entries_are_really_pending(catalogue):
    assert PENDING.keys() <= catalogue, "PENDING names an ID not in the catalogue"
    done = sorted(PENDING.keys() & ids_named_by_tests())
    assert not done, f"tested now, remove from PENDING: {', '.join(done)}"


def test_the_check_reads_names_and_docstrings(tmp_path, monkeypatch):
    """The scanner itself: a name, a docstring, and a near miss."""
    (tmp_path / "test_sample.py").write_text(
        "def test_saml_07_wrapped():\n    pass\n\n"
        "def test_other():\n    '''AUTH-03: one message.'''\n\n"
        "def test_web01_no_separator():\n    pass\n"
    )
    monkeypatch.setattr(__import__(__name__, fromlist=["TESTS"]), "TESTS", tmp_path)
    assert ids_named_by_tests() == {"SAML-07", "AUTH-03"}


def test_the_check_reads_parametrised_case_ids(tmp_path, monkeypatch):
    """Case ids, literal or imported from a helper module; near misses too."""
    (tmp_path / "cases.py").write_text(
        "import pytest\n"
        "CASES = [pytest.param(1, id='web_02'), pytest.param(2, id='web03')]\n"
    )
    (tmp_path / "test_cases.py").write_text(
        "import pytest\n"
        "from tests.cases import CASES\n"
        "LOCAL = ['ops_05', 'nope']\n"
        "local = pytest.mark.parametrize('v', [1, 2], ids=LOCAL)\n\n"
        "@pytest.mark.parametrize('case', CASES)\n"
        "def test_imported(case):\n    pass\n\n"
        "@local\n"
        "def test_local(v):\n    pass\n\n"
        "@pytest.mark.parametrize('v', [pytest.param(1, id='auth_04')])\n"
        "def not_a_test(v):\n    pass\n\n"
        "@pytest.mark.parametrize('v', ['saml_09'])\n"
        "def test_a_value_is_not_an_id(v):\n    pass\n"
    )
    monkeypatch.setattr(__import__(__name__, fromlist=["TESTS"]), "TESTS", tmp_path)
    assert ids_named_by_tests() == {"WEB-02", "OPS-05"}


def test_docs_security_lists_every_entry(catalogue):
    """docs/security.md maps each catalogue entry to its tests: none left out."""
    doc = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| ([A-Z]+-\d\d) \|", doc, re.MULTILINE))
    assert sorted(catalogue - listed) == [], "docs/security.md lacks these entries"
