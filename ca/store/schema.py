"""Imports every model module so that Base.metadata holds the whole schema (Alembic, tests)."""
from ca.store import models  # noqa: F401
