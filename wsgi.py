"""WSGI entry point: `gunicorn wsgi:app`."""
from ra_portal import create_app

app = create_app()
