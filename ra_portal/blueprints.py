"""Every blueprint of the web application, registered by create_app (one line per area)."""
from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from crl.http import bp as pki_bp
    from ra_portal.web.pages import bp as pages_bp
    app.register_blueprint(pki_bp)
    app.register_blueprint(pages_bp)
