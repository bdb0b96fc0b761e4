"""Operations page for central operators and auditors: CA keys in the HSM, CRL and OCSP
freshness, scheduler leader and last runs, pending issuance intents, audit checkpoint lag."""
from __future__ import annotations

from flask import Blueprint, render_template

from ca.operations import last_runs, operations_status
from ra_portal import services
from ra_portal.web.common import page_errors, require

bp = Blueprint("ops_web", __name__, url_prefix="/ops", template_folder="templates")
page_errors(bp)


def duration(seconds) -> str:
    """Seconds as a short Vietnamese-neutral duration: '-2 h 05 min' style (h, min, s)."""
    if seconds is None:
        return "—"
    sign, s = ("-" if seconds < 0 else ""), abs(int(seconds))
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    if d:
        return f"{sign}{d} d {h:02d} h"
    if h:
        return f"{sign}{h} h {m:02d} min"
    return f"{sign}{m} min {sec:02d} s"


@bp.get("/")
@require("read", central=True)
def index():
    svc = services()
    with svc.db.transaction() as s:
        st = operations_status(s, svc.clock.now(), svc.keys)
        st["runs"] = last_runs(s)
    return render_template("ops/index.html", st=st, duration=duration)
