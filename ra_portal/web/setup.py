"""Wires the portal pages into the app: i18n, template helpers and the page blueprints."""
from __future__ import annotations

import datetime as dt

from flask import Flask
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import generate_csrf

from ra_portal.web.common import local_time

STATE_NAMES = {"draft": _l("nháp"), "submitted": _l("chờ phê duyệt"),
               "approved": _l("đã phê duyệt"), "rejected": _l("bị từ chối"),
               "issued": _l("đã cấp chứng thư"), "done": _l("đã thực hiện"),
               "failed": _l("thất bại")}
TYPE_NAMES = {"issue": _l("cấp mới"), "renew": _l("gia hạn"),
              "change": _l("thay đổi thông tin"), "revoke": _l("thu hồi"),
              "restore": _l("khôi phục thiết bị lưu khóa")}
STATUS_NAMES = {"valid": _l("còn hiệu lực"), "revoked": _l("đã thu hồi"),
                "expired": _l("hết hạn")}
REASON_NAMES = {"keyCompromise": _l("lộ khóa hoặc mất thiết bị (keyCompromise)"),
                "affiliationChanged": _l("thay đổi cơ quan, vị trí (affiliationChanged)"),
                "superseded": _l("được thay thế (superseded)"),
                "cessationOfOperation": _l("nghỉ hưu, thôi việc, giải thể (cessationOfOperation)"),
                "privilegeWithdrawn": _l("rút quyền theo yêu cầu (privilegeWithdrawn)"),
                "unspecified": _l("không nêu lý do (unspecified)")}
DOWNLOAD_FORMATS = [("pem", "PEM"), ("der", "DER"), ("chain-pem", _l("Chuỗi PEM")),
                    ("p7b", "PKCS#7")]


def _vntime(value) -> str:
    if isinstance(value, str) and value:
        value = dt.datetime.fromisoformat(value)
    return local_time(value) if isinstance(value, dt.datetime) else ""


def init_web(app: Flask) -> None:
    from ra_portal.web.i18n import init_i18n
    from ra_portal.web.bulk_pages import bp as bulk_bp
    from ra_portal.web.central_pages import bp as central_bp
    from ra_portal.web.me_pages import bp as me_bp
    from ra_portal.web.ra_pages import bp as ra_bp
    init_i18n(app)
    app.jinja_env.globals.update(csrf_token=generate_csrf, state_names=STATE_NAMES,
                                 type_names=TYPE_NAMES, status_names=STATUS_NAMES,
                                 reason_names=REASON_NAMES, download_formats=DOWNLOAD_FORMATS)
    app.jinja_env.filters["vntime"] = _vntime
    for bp in (ra_bp, me_bp, central_bp, bulk_bp):
        app.register_blueprint(bp)
    app.register_blueprint(__import__("ra_portal.web.device_pages").web.device_pages.bp)  # issue 6
    app.register_blueprint(__import__("ra_portal.web.transfer_pages").web.transfer_pages.bp)  # transfers
    app.register_blueprint(__import__("ra_portal.web.reorg_pages").web.reorg_pages.bp)  # issue 5 reorganisation
