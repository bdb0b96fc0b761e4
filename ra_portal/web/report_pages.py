"""Report pages for leaders: every figure of ca.reports as tables and SVG charts, scoped to the
caller (centre: all, or one province; a province: its own), with CSV/XLSX export of each table."""
from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ca import reports
from ca.ra.workdays import DEADLINE_DAYS
from ra_portal import services
from ra_portal.web.common import caller, local_time, page_errors, require
from ra_portal.web.setup import STATE_NAMES, TYPE_NAMES
from ra_portal.web.svg_charts import bar_chart, line_chart

bp = Blueprint("report_web", __name__, url_prefix="/reports", template_folder="templates")
page_errors(bp)

TITLES = {
    "by_domain": _l("Chứng thư theo tỉnh, bộ, ngành"),
    "by_agency": _l("Chứng thư theo cơ quan quản lý trực tiếp"),
    "by_device": _l("Chứng thư theo loại thiết bị lưu khóa"),
    "per_month": _l("Chứng thư cấp theo tháng"),
    "coverage": _l("Tỷ lệ cán bộ có chứng thư còn hiệu lực"),
    "requests": _l("Yêu cầu theo loại và trạng thái"),
    "turnaround": _l("Thời gian xử lý so với thời hạn"),
    "overdue": _l("Yêu cầu quá hạn"),
}
GROUP_OF = {"by_domain": "domain", "by_agency": "agency", "by_device": "device_type"}


class BadParam(Exception):
    """A query parameter the page cannot use (answered 400 with a Vietnamese sentence)."""


@bp.errorhandler(BadParam)
def _bad_param(exc: BadParam):
    return render_template("error.html", message=str(exc)), 400


def query_int(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name, "")
    if raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise BadParam(_("Tham số «%(name)s» phải là số nguyên từ %(low)s đến %(high)s.",
                         name=name, low=low, high=high))
    return int(raw)


def _hours(v) -> str:
    return "" if v is None else f"{v:.1f}"


def build_tables(session, scope, now, months: int) -> dict[str, dict]:
    """Every report table: {name: {title, headers, rows}} with the function results as cells."""
    out: dict[str, dict] = {}
    for name, by in GROUP_OF.items():
        rows = reports.certificate_status(session, scope, now, by=by)
        out[name] = {"headers": [_("Nhóm"), _("Còn hiệu lực"), _("Hết hạn"), _("Đã thu hồi"),
                                 _("Tổng")],
                     "rows": [[r.group, r.active, r.expired, r.revoked, r.total] for r in rows]}
    out["per_month"] = {"headers": [_("Tháng"), _("Số chứng thư cấp")],
                        "rows": [[m, n] for m, n in
                                 reports.issued_per_month(session, scope, now, months)]}
    out["coverage"] = {"headers": [_("Tỉnh, bộ, ngành"), _("Số cán bộ"),
                                   _("Có chứng thư còn hiệu lực"), _("Tỷ lệ (%)")],
                       "rows": [[r.group, r.staff, r.with_valid, f"{100 * r.share:.1f}"]
                                for r in reports.staff_coverage(session, scope, now)]}
    by_state = reports.requests_by_state(session, scope)
    out["requests"] = {"headers": [_("Loại yêu cầu"), _("Trạng thái"), _("Số yêu cầu")],
                       "rows": [[str(TYPE_NAMES.get(t, t)), str(STATE_NAMES.get(s, s)), n]
                                for (t, s), n in sorted(by_state.items())]}
    rows = []
    for t in DEADLINE_DAYS:
        ta = reports.turnaround(session, scope, t)
        rows.append([str(TYPE_NAMES.get(t, t)), ta.deadline_working_days, ta.finished,
                     _hours(ta.median_hours), _hours(ta.p90_hours), ta.on_time,
                     f"{100 * ta.on_time_share:.1f}"])
    out["turnaround"] = {"headers": [_("Loại yêu cầu"), _("Thời hạn (ngày làm việc)"),
                                     _("Đã hoàn thành"), _("Trung vị (giờ)"),
                                     _("Phân vị 90 (giờ)"), _("Đúng hạn"), _("Tỷ lệ đúng hạn (%)")],
                         "rows": rows}
    out["overdue"] = {"headers": [_("Mã yêu cầu"), _("Loại yêu cầu"), _("Thuê bao"),
                                  _("Hạn xử lý"), _("Quá hạn (giờ)")],
                      "rows": [[r.id, str(TYPE_NAMES.get(r.type, r.type)),
                                r.subscriber.full_name, local_time(r.due_at),
                                f"{(now - r.due_at).total_seconds() / 3600:.1f}"]
                               for r in reports.overdue(session, scope, now)]}
    for name, table in out.items():
        table["title"] = str(TITLES[name])
    return out


def charts(tables: dict[str, dict]) -> dict:
    def status_chart(name):
        rows = tables[name]["rows"][:20]
        return bar_chart(tables[name]["title"], [r[0] for r in rows], {
            _("Còn hiệu lực"): [r[1] for r in rows], _("Hết hạn"): [r[2] for r in rows],
            _("Đã thu hồi"): [r[3] for r in rows]})
    out = {name: status_chart(name) for name in GROUP_OF}
    pm = tables["per_month"]["rows"]
    out["per_month"] = line_chart(tables["per_month"]["title"], [r[0] for r in pm],
                                  [r[1] for r in pm])
    cov = tables["coverage"]["rows"]
    out["coverage"] = bar_chart(tables["coverage"]["title"], [r[0] for r in cov],
                                {_("Tỷ lệ (%)"): [float(r[3]) for r in cov]})
    ta = tables["turnaround"]["rows"]
    out["turnaround"] = bar_chart(tables["turnaround"]["title"], [r[0] for r in ta], {
        _("Trung vị (giờ)"): [float(r[3] or 0) for r in ta],
        _("Phân vị 90 (giờ)"): [float(r[4] or 0) for r in ta]}, stacked=False)
    return out


def _params():
    return {"domain": query_int("domain", None, 1, 2**31 - 1),
            "months": query_int("months", 12, 1, 120)}


def _compute():
    svc, who, p = services(), caller(), _params()
    now = svc.clock.now()
    with svc.db.read_transaction() as s:  # the replica when there is one (lag tolerated)
        scope = reports.scope_for(s, who, p["domain"])
        tables = build_tables(s, scope, now, p["months"])
        domains = reports.domains_for(s, reports.scope_for(s, who)) if who.is_central else []
    return tables, domains, p, now


@bp.get("/")
@require("read")
def index():
    tables, domains, p, now = _compute()
    return render_template("reports/index.html", tables=tables, charts=charts(tables),
                           domains=domains, params=p, now=now)


def export_response(basename: str, headers: list, rows: list, fmt: str) -> Response:
    """A table as CSV (UTF-8 with BOM, for Excel) or XLSX."""
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")
        w.writerow([str(h) for h in headers])
        w.writerows(rows)
        return Response(buf.getvalue().encode("utf-8-sig"), mimetype="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f"attachment; filename={basename}.csv"})
    from openpyxl import Workbook
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(basename[:31])
    ws.append([str(h) for h in headers])
    for r in rows:
        ws.append(list(r))
    out = io.BytesIO()
    wb.save(out)
    return Response(out.getvalue(), headers={
        "Content-Disposition": f"attachment; filename={basename}.xlsx"},
        mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")


@bp.get("/<any(by_domain, by_agency, by_device, per_month, coverage, requests, turnaround, "
        "overdue):name>.<any(csv, xlsx):fmt>")
@require("read")
def export(name: str, fmt: str):
    tables, _domains, _p, _now = _compute()
    table = tables[name]
    return export_response(f"govca-{name}", table["headers"], table["rows"], fmt)
