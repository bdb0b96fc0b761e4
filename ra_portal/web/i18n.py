"""Page languages: flask-babel with Vietnamese by default and English on request."""
from __future__ import annotations

from flask import Blueprint, Flask, redirect, request, session
from flask_babel import Babel

from ra_portal.web.common import safe_next

LANGUAGES = {"vi": "Tiếng Việt", "en": "English"}
DEFAULT = "vi"
babel = Babel()
bp = Blueprint("i18n", __name__)


def select_locale() -> str:
    lang = session.get("lang")
    return lang if lang in LANGUAGES else DEFAULT


@bp.get("/lang/<code>")
def switch(code: str):
    """Remember the chosen language in the session (Vietnamese for anything unknown)."""
    session["lang"] = code if code in LANGUAGES else DEFAULT
    return redirect(safe_next(request.args.get("next")))


def init_i18n(app: Flask) -> None:
    try:  # the .mo files are shipped; compile them only if a checkout lacks them
        from ra_portal.translations.update import compile_all
        compile_all(only_missing=True)
    except OSError:
        pass
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT)
    app.config.setdefault("BABEL_DEFAULT_TIMEZONE", "Asia/Ho_Chi_Minh")
    babel.init_app(app, locale_selector=select_locale)
    app.jinja_env.globals["LANGUAGES"] = LANGUAGES
    app.jinja_env.globals["current_lang"] = select_locale
    app.register_blueprint(bp)
