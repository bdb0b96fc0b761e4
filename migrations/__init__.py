"""Alembic migrations (run with `govca db upgrade`)."""
