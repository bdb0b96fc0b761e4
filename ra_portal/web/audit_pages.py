"""Audit trail viewer: read-only, scoped (centre: everything; RA officers and approvers: their
domain), filtered and paged; every view and export is itself an audit event (ca.audit_read)."""
from __future__ import annotations

import datetime as dt
import json

from flask import Blueprint, render_template, request
from flask_babel import gettext as _
from sqlalchemy import select

from ca import audit
from ca.audit_read import MAX_PAGE, AuditQuery, read_events
from ca.ra.workdays import VN_TZ
from ca.store.models import RaDomain
from ra_portal import services
from ra_portal.web.common import caller, local_time, page_errors, require
from ra_portal.web.report_pages import BadParam, export_response, query_int

bp = Blueprint("audit_web", __name__, url_prefix="/audit", template_folder="templates")
page_errors(bp)


@bp.errorhandler(BadParam)
def _bad_param(exc: BadParam):
    return render_template("error.html", message=str(exc)), 400


def _day(name: str) -> dt.date | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            day = dt.datetime.strptime(raw, fmt).date()
            if 2000 <= day.year <= 2100:
                return day
        except ValueError:
            continue
    raise BadParam(_("Tham số «%(name)s» phải là một ngày (ngày/tháng/năm).", name=name))


def _text(name: str) -> str | None:
    raw = request.args.get(name, "").strip()
    if len(raw) > 200 or any(ord(c) < 32 for c in raw):
        raise BadParam(_("Tham số «%(name)s» quá dài hoặc chứa ký tự không hợp lệ.", name=name))
    return raw or None


def query_from_args() -> tuple[AuditQuery, dict]:
    """The page's filters as an AuditQuery (days in Vietnam time; 'to' includes its day)."""
    since, until = _day("from"), _day("to")
    if since and until and until < since:
        raise BadParam(_("Ngày kết thúc phải sau ngày bắt đầu."))
    args = {"action": _text("action"), "actor": _text("actor"), "target": _text("target"),
            "from": since.isoformat() if since else None,
            "to": until.isoformat() if until else None,
            "per_page": query_int("per_page", 50, 1, MAX_PAGE),
            "before": query_int("before", None, 1, 2**62 - 1)}
    q = AuditQuery(action_prefix=args["action"], actor=args["actor"], target=args["target"],
                   since=dt.datetime.combine(since, dt.time(), VN_TZ) if since else None,
                   until=dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), VN_TZ)
                   if until else None, before_seq=args["before"], limit=args["per_page"])
    return q, args


def _details(text: str) -> str:
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, sort_keys=True,
                          separators=(",", ":"))
    except ValueError:
        return text


def _rows(session, events) -> list[dict]:
    names = dict(session.execute(select(RaDomain.id, RaDomain.name)).all())
    return [{"seq": e.seq, "at": local_time(e.at), "action": e.action, "actor": e.actor,
             "target": e.target or "", "domain": names.get(e.domain_id, "") if e.domain_id else "",
             "details": _details(e.details)} for e in events]


@bp.get("/")
@require("read")
def index():
    svc, who = services(), caller()
    q, args = query_from_args()
    with svc.db.transaction() as s:
        rows = _rows(s, read_events(s, who, q, at=svc.clock.now()))
    more = len(rows) == q.limit and rows[-1]["seq"] > 1
    filters = {k: v for k, v in args.items() if v is not None and k != "before"}
    return render_template("audit/index.html", rows=rows, args=args, filters=filters,
                           next_before=rows[-1]["seq"] if more else None)


HEADERS = ("seq", "Thời điểm (giờ Việt Nam)", "Hành động", "Người thực hiện", "Đối tượng",
           "Đơn vị RA", "Chi tiết")


@bp.get("/export.<any(csv, xlsx):fmt>")
@require("read")
def export(fmt: str):
    """The events the page shows with these filters, as a file; audited as a sensitive read."""
    svc, who = services(), caller()
    q, _args = query_from_args()
    now = svc.clock.now()
    with svc.db.transaction() as s:
        rows = _rows(s, read_events(s, who, q, at=now))
        audit.record(s, "audit.read.export", actor=who.actor, at=now,
                     domain_id=None if who.can("audit.read") else who.domain_id,
                     details={"format": fmt, "returned": len(rows),
                              "first_seq": rows[0]["seq"] if rows else None,
                              "last_seq": rows[-1]["seq"] if rows else None})
    return export_response("govca-audit", list(HEADERS),
                           [[r[k] for k in ("seq", "at", "action", "actor", "target", "domain",
                                            "details")] for r in rows], fmt)
