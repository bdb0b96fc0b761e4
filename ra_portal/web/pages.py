"""Public pages: the home page with the CA certificates and relying-party links."""
from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy import select

from ca.store.models import CertificateAuthority
from ra_portal import services

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    svc = services()
    with svc.db.transaction() as s:
        cas = s.execute(select(CertificateAuthority).where(CertificateAuthority.status == "active")
                        .order_by(CertificateAuthority.id)).scalars().all()
        rows = [{"name": c.name, "subject": c.subject, "not_after": c.not_after,
                 "key": f"{c.key_type.upper()} {c.key_spec}", "serial": c.serial} for c in cas]
    return render_template("index.html", cas=rows, base_url=svc.settings.base_url)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}
