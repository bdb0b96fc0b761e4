"""Imports every model module so that Base.metadata holds the whole schema (Alembic, tests)."""
from ca.store import models  # noqa: F401
from ca.store import models_crl  # noqa: F401
from ca.store import models_ra  # noqa: F401
from ca.store import models_audit  # noqa: F401
from ca.store import models_tokens  # noqa: F401
from ca.store import models_ops  # noqa: F401
from ca.store import models_org  # noqa: F401
from ca.store import models_restore  # noqa: F401
from ca.store import models_transfer  # noqa: F401
from ca.store import models_reorg  # noqa: F401
from ca.store import models_outbox  # noqa: F401
