"""Migrations leave the previous release able to run (expand now, contract a release later).

Issue 17. Nodes are upgraded one at a time: while node B still runs the
previous release, node A's ``idp-admin db upgrade`` changes the schema under
it (docs/deploy.md, "Backup, restore and upgrade"). So a migration's
``upgrade()`` may add tables, nullable columns, columns with a server
default and indexes, but not take away or rename what the previous release
reads or writes, nor make it insert a NOT NULL column it does not know. The
release after, when no node runs the old code, drops what is no longer read.

Such a step is allowed only with a comment saying why the previous release
does not mind, on the line or in the comment block just above it::

    # previous release: nothing has read failed_logins since 0009 (two releases)
    op.drop_table("failed_logins")

The rule is written in idp/migrations/README.md, where migrations are made.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ROOT / "idp" / "migrations" / "versions"
MARKER = "# previous release:"

DROPS = {"drop_column", "drop_table", "rename_table"}
SQL_WORDS = ("DROP COLUMN", "DROP TABLE", "RENAME ", "SET NOT NULL")


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def _is_false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _not_null_without_default(column: ast.expr) -> bool:
    return (
        isinstance(column, ast.Call)
        and _is_false(_keyword(column, "nullable"))
        and _keyword(column, "server_default") is None
    )


def breaking_steps(source: str) -> list[tuple[int, str]]:
    """(line, what) for each step of ``upgrade()`` the previous release would trip on."""
    tree = ast.parse(source)
    upgrade = next(
        (
            node
            for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name == "upgrade"
        ),
        None,
    )
    if upgrade is None:
        return []
    steps = []
    for node in ast.walk(upgrade):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        if name in DROPS:
            steps.append((node.lineno, name))
        elif name == "alter_column":
            if _keyword(node, "new_column_name") is not None:
                steps.append((node.lineno, "alter_column renaming a column"))
            if _is_false(_keyword(node, "nullable")) and (
                _keyword(node, "server_default") is None
            ):
                steps.append(
                    (node.lineno, "alter_column to NOT NULL without a default")
                )
            default = _keyword(node, "server_default")
            if isinstance(default, ast.Constant) and default.value is None:
                # Added NOT NULL with a default, then the default taken away:
                # the previous release's INSERTs, which do not name it, fail.
                steps.append((node.lineno, "alter_column dropping a server default"))
        elif name == "add_column":
            if any(_not_null_without_default(arg) for arg in node.args):
                steps.append((node.lineno, "add_column NOT NULL without a default"))
        elif name == "execute":
            text = " ".join(
                part.value.upper()
                for part in ast.walk(node)
                if isinstance(part, ast.Constant) and isinstance(part.value, str)
            )
            for words in SQL_WORDS:
                if words in text:
                    steps.append((node.lineno, f"SQL with {words.strip()}"))
    return sorted(steps)


def explained(lines: list[str], lineno: int) -> bool:
    """Whether the marker is on line ``lineno`` (1-based) or the comments just above."""
    if MARKER in lines[lineno - 1]:
        return True
    index = lineno - 2
    while index >= 0 and lines[index].strip().startswith("#"):
        if lines[index].strip().startswith(MARKER):
            return True
        index -= 1
    return False


def unexplained(source: str) -> list[str]:
    lines = source.splitlines()
    return [
        f"line {lineno}: {what}"
        for lineno, what in breaking_steps(source)
        if not explained(lines, lineno)
    ]


@pytest.mark.parametrize(
    "path", sorted(VERSIONS.glob("[0-9]*.py")), ids=lambda path: path.stem
)
def test_each_migration_keeps_the_previous_release_running(path):
    problems = unexplained(path.read_text(encoding="utf-8"))
    assert not problems, (
        f"{path.name} would break nodes still on the previous release: "
        f"{'; '.join(problems)}. Expand now and contract a release later, or say "
        f"why it is safe in a '{MARKER} ...' comment (idp/migrations/README.md)"
    )


BREAKING = """
def upgrade():
    op.drop_column("users", "failed_logins")
    op.rename_table("sessions", "idp_sessions")
    with op.batch_alter_table("users") as batch_op:
        batch_op.alter_column("email", new_column_name="mail")
        batch_op.alter_column("phone", nullable=False)
    op.add_column("users", sa.Column("tier", sa.Integer(), nullable=False))
    op.execute("ALTER TABLE users DROP COLUMN locale")
    op.add_column("users", sa.Column("node", sa.String(8), nullable=False, server_default="a"))
    op.alter_column("users", "node", server_default=None)
    op.drop_table("captcha_challenges")


def downgrade():
    op.drop_table("anything")  # a downgrade is not run beside the old release
"""

SAFE = """
def upgrade():
    op.create_table("t", sa.Column("id", sa.Integer(), nullable=False))
    op.add_column("users", sa.Column("tier", sa.Integer(), nullable=True))
    op.add_column(
        "users",
        sa.Column("level", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index("ix_users_tier", "users", ["tier"])
    # previous release: it stopped reading this table two releases ago
    # (0009), and nothing writes it.
    op.drop_table("failed_logins")
    op.drop_column("users", "x")  # previous release: never mapped
"""


def test_the_check_finds_each_breaking_step():
    assert [what for _, what in breaking_steps(BREAKING)] == [
        "drop_column",
        "rename_table",
        "alter_column renaming a column",
        "alter_column to NOT NULL without a default",
        "add_column NOT NULL without a default",
        "SQL with DROP COLUMN",
        "alter_column dropping a server default",
        "drop_table",
    ]


def test_expanding_steps_and_explained_contractions_pass():
    assert unexplained(SAFE) == []
    # The marker counts only on the step's line or the comments just above.
    far = SAFE.replace(
        '    op.drop_table("failed_logins")',
        '    op.create_index("ix", "t", ["id"])\n    op.drop_table("failed_logins")',
    )
    line = far.splitlines().index('    op.drop_table("failed_logins")') + 1
    assert unexplained(far) == [f"line {line}: drop_table"]
