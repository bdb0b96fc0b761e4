"""`govca` commands: ra (filled in by its issue)."""
from __future__ import annotations

from ra_portal.cli.common import main  # noqa: F401
