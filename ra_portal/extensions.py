"""Flask extensions, created unbound and initialised in create_app."""
from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy

from ca.store.base import Base

# The models subclass ca.store.base.Base (Flask-free); Flask-SQLAlchemy shares its metadata.
db = SQLAlchemy(metadata=Base.metadata)
