"""Module codes and role names unique whatever their case.

A database holding two spellings of one code ("EMIS" and "emis") cannot
take the new indexes: the upgrade stops before changing anything and names
them, to be renamed with ``idp-admin CONFIG module rename`` (or ``role
rename``) first.

Revision ID: 0011_registry_codes
Revises: 0010_sp_encryption_method
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_registry_codes"
down_revision = "0010_sp_encryption_method"
branch_labels = None
depends_on = None

INDEXES = (
    ("uq_modules_code_lower", "modules", "code", "module rename"),
    ("uq_roles_name_lower", "roles", "name", "role rename"),
)


def _case_duplicates(table: str, column: str) -> list[str]:
    rows = op.get_bind().execute(
        sa.text(
            f"SELECT {column} FROM {table} WHERE lower({column}) IN "  # noqa: S608
            f"(SELECT lower({column}) FROM {table} GROUP BY lower({column}) "
            f"HAVING count(*) > 1) ORDER BY lower({column}), {column}"
        )
    )
    return [row[0] for row in rows]


def upgrade():
    for _name, table, column, command in INDEXES:
        duplicates = _case_duplicates(table, column)
        if duplicates:
            raise RuntimeError(
                f"{table}.{column} holds spellings that differ only in case "
                f"({', '.join(duplicates)}); rename all but one with "
                f"'idp-admin CONFIG {command}', then upgrade again"
            )
    for name, table, column, _command in INDEXES:
        op.create_index(name, table, [sa.text(f"lower({column})")], unique=True)


def downgrade():
    for name, table, _column, _command in INDEXES:
        op.drop_index(name, table_name=table)
