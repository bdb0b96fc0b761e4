"""Persistence: SQLAlchemy models and the transaction helper; the only code that writes the DB."""
