"""Relying-party HTTP endpoints (no login): CA certificates; CRLs and OCSP join here."""
from __future__ import annotations

import re

from flask import Blueprint, Response, abort, current_app
from sqlalchemy import select

from ca.store.models import CertificateAuthority

bp = Blueprint("pki", __name__)


def services():
    """The app's service container (set by the composition root)."""
    return current_app.extensions["govca"]
_CA_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


@bp.get("/pki/certs/<string:filename>")
def ca_certificate(filename: str):
    if not filename.endswith(".crt") or not _CA_NAME.match(filename[:-4]):
        abort(404)
    with services().db.transaction() as s:
        der = s.execute(select(CertificateAuthority.certificate_der).where(
            CertificateAuthority.name == filename[:-4])).scalar_one_or_none()
    if der is None:
        abort(404)
    return Response(der, mimetype="application/pkix-cert",
                    headers={"Cache-Control": "public, max-age=86400"})
