"""WSGI entry point: `gunicorn wsgi:app`."""
import gc

from ra_portal import create_app

app = create_app()
# Everything made at start-up (modules, profiles, pkilint's validators: ~180,000 objects) lives
# as long as the worker; frozen, the garbage collector no longer walks it on every full
# collection, which cost ~5 % of the CPU of batch issuance (issue 8, docs/performance.md).
gc.freeze()
