"""Every blueprint of the web application, registered by create_app (one line per area)."""
from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from crl.http import bp as pki_bp
    from ra_portal.web.pages import bp as pages_bp
    app.register_blueprint(pki_bp)
    app.register_blueprint(pages_bp)
    from ra_portal.web.ops import bp as ops_bp
    app.register_blueprint(ops_bp)
    from ra_portal.api import bp as api_bp
    from ra_portal.auth import init_auth
    from ra_portal.web.auth_pages import bp as auth_pages_bp
    init_auth(app)
    app.register_blueprint(api_bp)
    app.register_blueprint(auth_pages_bp)
    __import__("ra_portal.web.setup").web.setup.init_web(app)  # portal pages, i18n
    from ra_portal.web.report_pages import bp as report_bp
    app.register_blueprint(report_bp)
    from ra_portal.web.audit_pages import bp as audit_pages_bp
    app.register_blueprint(audit_pages_bp)
    from ra_portal.web.ops_pages import bp as ops_pages_bp
    app.register_blueprint(ops_pages_bp)
    __import__("ra_portal.web.unavailable").web.unavailable.init_app(app)  # issue 8: 503 pages
