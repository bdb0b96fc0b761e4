"""The `govca` command line; each area registers its commands on `main` in its own module."""
from ra_portal.cli.common import main  # noqa: F401
from ra_portal.cli import core, pki, ra, audit  # noqa: F401,E402  (registration by import)
from ra_portal.cli import tokens  # noqa: F401,E402
from ra_portal.cli import reorg  # noqa: F401,E402
