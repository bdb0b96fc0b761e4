"""Bulk import of the 19-column spreadsheet (CSV/XLSX) and export of the subscriber list."""
from __future__ import annotations

from flask import Blueprint, Response, abort, render_template, request
from flask_babel import gettext as _

from ca.errors import CAError, InvalidInput
from ca.ra import bulk_import
from ca.ra import export as exporter
from ra_portal import services
from ra_portal.web.common import (caller, check_csrf, error_message, page_errors, require,
                                  status_of)

bp = Blueprint("bulk_web", __name__, url_prefix="/ra", template_folder="templates")

page_errors(bp)


@bp.route("/import", methods=["GET", "POST"])
@require("subscriber.write")
def import_page():
    columns = [h for _, h in bulk_import.COLUMNS]
    if request.method == "GET":
        return render_template("ra/import.html", columns=columns, report=None, error=None)
    svc = services()
    try:
        check_csrf()
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            raise InvalidInput("choose a file", field="file", code="required")
        data = upload.stream.read(bulk_import.MAX_BYTES + 1)
        if len(data) > bulk_import.MAX_BYTES:
            raise InvalidInput("the file is too large", field="file", code="too_large")
        rows = bulk_import.read_table(data, upload.filename)
        report = bulk_import.import_rows(svc.db, svc.clock, caller(), rows)
    except CAError as exc:
        msg = error_message(exc)
        if exc.params.get("row"):
            msg = _("Dòng %(row)s: %(message)s", row=exc.params["row"], message=msg)
        return render_template("ra/import.html", columns=columns, report=None,
                               error=msg), status_of(exc)
    errors = [{"row": e.row, "message": error_message(e.error)} for e in report.errors]
    return render_template("ra/import.html", columns=columns, report=report,
                           errors=errors, error=None), (200 if report.ok else 400)


@bp.get("/export.<fmt>")
@require("read")
def export(fmt: str):
    if fmt not in ("csv", "xlsx"):
        abort(404)
    svc = services()
    with svc.db.transaction() as s:
        table = exporter.rows(s, caller())
    if fmt == "csv":
        body, media = exporter.to_csv(table), "text/csv; charset=utf-8"
    else:
        body = exporter.to_xlsx(table)
        media = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return Response(body, mimetype=media, headers={
        "Content-Disposition": f'attachment; filename="thue-bao.{fmt}"'})
