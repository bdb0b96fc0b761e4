"""The GovCA web application: RA portal, REST API and relying-party endpoints."""
from __future__ import annotations

from flask import Flask

from ca.store.database import configure_sqlite
from ra_portal.extensions import db
from ra_portal.settings import Settings
from ra_portal.wiring import build_services


def create_app(settings: Settings | None = None, *, clock=None, testing: bool = False) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__, instance_path=str(settings.instance), instance_relative_config=False)
    app.config.update(
        SECRET_KEY=settings.secret_key(),
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=({"connect_args": {"timeout": 30}}
                                   if settings.database_url.startswith("sqlite")
                                   else {"pool_pre_ping": True}),
        MAX_CONTENT_LENGTH=8 * 1024 * 1024,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        JSON_AS_ASCII=False,
        TESTING=testing,
    )
    app.json.ensure_ascii = False
    db.init_app(app)
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            configure_sqlite(engine)
    app.extensions["govca"] = build_services(settings, clock=clock, engine=engine)

    from ra_portal.blueprints import register_blueprints
    register_blueprints(app)
    __import__("crl.http").http.start_scheduler_if_enabled(app)  # GOVCA_SCHEDULER=inprocess
    return app


def services(app: Flask | None = None):
    from flask import current_app
    return (app or current_app).extensions["govca"]
