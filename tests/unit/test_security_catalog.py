"""Every attack in the shared catalogue (SECURITY.md) has a test naming it.

A test names an ID in its function name (``test_saml_07_...``) or on the
first line of its docstring (``SAML-07: ...``). Entries whose feature has
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

# ID -> why it has no test yet. Each comes with the federation work (admin
# metadata upload and URL refresh, signed aggregates, key rollover).
PENDING = {
    "SAML-28": "signed metadata aggregates and quarantine: federation issue",
    "SAML-29": "ACS domain confirmation on admin upload: federation issue",
    "WEB-14": "metadata upload file names: federation issue",
    "OPS-04": "metadata fetched from a URL: federation issue",
    "OPS-08": "signing key rollover: federation issue",
}

_ROW = re.compile(r"^\| ([A-Z]+-\d\d) \|(.*)$", re.MULTILINE)


def catalogue_ids() -> set[str]:
    text = CATALOGUE.read_text(encoding="utf-8")
    return {
        entry for entry, rest in _ROW.findall(text) if "retired" not in rest.lower()
    }


def ids_named_by_tests() -> set[str]:
    """IDs named by a test function's name or its docstring's first line."""
    found: set[str] = set()
    name_pattern = re.compile(r"^test_([a-z]+)_(\d\d)(?:_|$)")
    doc_pattern = re.compile(r"^([A-Z]+-\d\d)\b")
    for path in TESTS.rglob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if not node.name.startswith("test_"):
                continue
            match = name_pattern.match(node.name)
            if match:
                found.add(f"{match[1].upper()}-{match[2]}")
            doc = ast.get_docstring(node)
            if doc and (match := doc_pattern.match(doc.strip())):
                found.add(match[1])
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


def test_docs_security_lists_every_entry(catalogue):
    """docs/security.md maps each catalogue entry to its tests: none left out."""
    doc = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| ([A-Z]+-\d\d) \|", doc, re.MULTILINE))
    assert sorted(catalogue - listed) == [], "docs/security.md lacks these entries"
