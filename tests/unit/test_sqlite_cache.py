"""GOVCA_SQLITE_CACHE_MIB: SQLite's page cache per connection (ca/store/database.py)."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from ca.store.database import make_engine, sqlite_cache_mib


def _cache_size(tmp_path) -> int:
    engine = make_engine(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    try:
        with engine.connect() as conn:
            return conn.execute(text("PRAGMA cache_size")).scalar_one()
    finally:
        engine.dispose()


@pytest.mark.parametrize("value, mib", [(None, 2), ("16", 16), ("256", 256), ("0", 1),
                                        ("99999", 4096), ("lots", 2), ("", 2)])
def test_cache_size_follows_the_setting(tmp_path, monkeypatch, value, mib):
    if value is None:
        monkeypatch.delenv("GOVCA_SQLITE_CACHE_MIB", raising=False)
    else:
        monkeypatch.setenv("GOVCA_SQLITE_CACHE_MIB", value)
    assert sqlite_cache_mib() == mib
    assert _cache_size(tmp_path) == -mib * 1024  # negative: KiB, SQLite's convention
