"""The SQLite engine's settings (idp.db): what development runs on."""

from __future__ import annotations

from sqlalchemy import text

from idp.db import make_engine


def test_a_file_database_runs_wal_with_normal_sync_and_foreign_keys(tmp_path):
    """WAL with synchronous NORMAL (1), the documented development choice:
    a COMMIT does not wait for the disk, a crash of the process loses
    nothing. FULL (2), SQLite's default, would cost an fdatasync a commit.
    """
    engine = make_engine({"sqlalchemy.url": f"sqlite:///{tmp_path}/idp.sqlite"})
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()
