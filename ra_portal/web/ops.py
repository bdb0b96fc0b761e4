"""Operations endpoints for load balancers and monitoring: GET /readyz and GET /metrics."""
from __future__ import annotations

import threading
import time

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from ca import metrics
from ca.errors import CAError
from ca.operations import operations_status
from ca.store.models import Certificate, CertificateAuthority
from ra_portal import services

bp = Blueprint("ops", __name__)
CACHE_SECONDS = 10.0  # database-derived metrics are recomputed at most this often per process


def _check_database(svc) -> dict:
    try:
        with svc.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"ok": True}
    except SQLAlchemyError as exc:
        return {"ok": False, "error": f"database unreachable ({type(exc).__name__})"}


def _check_hsm(svc) -> dict:
    """Reach the token and read an active CA's private-key object (not a cached handle)."""
    try:
        with svc.db.transaction() as s:
            ca = s.execute(select(CertificateAuthority).where(
                CertificateAuthority.status == "active").order_by(CertificateAuthority.id)
                .limit(1)).scalar_one_or_none()
            if ca is None:
                return {"ok": False, "error": "no active CA"}
            name, key_id = ca.name, ca.key_id
    except SQLAlchemyError:
        return {"ok": False, "error": "not checked: the database is unreachable"}
    try:
        attrs = svc.keys.attributes(bytes.fromhex(key_id))
    except CAError as exc:
        return {"ok": False, "ca": name, "error": exc.message}
    except Exception as exc:  # noqa: BLE001 - PKCS#11 errors of any kind mean "not ready"
        return {"ok": False, "ca": name, "error": f"key not usable ({type(exc).__name__})"}
    return {"ok": bool(attrs.get("sensitive")), "ca": name}


@bp.get("/readyz")
def readyz():
    svc = services()
    checks = {"database": _check_database(svc)}
    checks["hsm"] = _check_hsm(svc) if checks["database"]["ok"] else {
        "ok": False, "error": "not checked: the database is unreachable"}
    ready = all(c["ok"] for c in checks.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": checks}), (
        200 if ready else 503)


class DatabaseCollector:
    """Metrics read from the database (true across workers and restarts), cached briefly."""

    def __init__(self, svc) -> None:
        self.svc = svc
        self._lock = threading.Lock()
        self._at = 0.0
        self._families: list = []

    def collect(self):
        with self._lock:
            if time.monotonic() - self._at > CACHE_SECONDS:
                self._families = self._read()
                self._at = time.monotonic()
            return list(self._families)

    def _read(self) -> list:
        issued = CounterMetricFamily("govca_certificates_issued", "Certificates issued",
                                     labels=["ca", "profile"])
        revoked = CounterMetricFamily("govca_certificates_revoked", "Certificates revoked",
                                      labels=["ca", "reason"])
        states = GaugeMetricFamily("govca_certificate_rows", "Certificate rows by state "
                                   "(reserved = pending issuance intents)", labels=["ca", "state"])
        ca_expiry = GaugeMetricFamily("govca_ca_not_after_timestamp_seconds",
                                      "Expiry of each active CA certificate", labels=["ca"])
        crl_next = GaugeMetricFamily("govca_crl_next_update_timestamp_seconds",
                                     "nextUpdate of the latest published full CRL", labels=["ca"])
        ocsp_stale = GaugeMetricFamily("govca_ocsp_stale_responses",
                                       "Pre-signed OCSP responses past their nextUpdate",
                                       labels=["ca"])
        lease = GaugeMetricFamily("govca_scheduler_lease_expiry_timestamp_seconds",
                                  "Expiry of the scheduler's leader lease", labels=["name"])
        audit_seq = GaugeMetricFamily("govca_audit_head_seq", "Sequence number of the audit head")
        cp_seq = GaugeMetricFamily("govca_audit_checkpoint_seq",
                                   "Seq signed by the last checkpoint")
        cp_at = GaugeMetricFamily("govca_audit_checkpoint_timestamp_seconds",
                                  "Time of the last audit checkpoint")
        with self.svc.db.transaction() as s:
            names = dict(s.execute(select(CertificateAuthority.id,
                                          CertificateAuthority.name)).all())
            for ca_id, profile, n in s.execute(
                    select(Certificate.ca_id, Certificate.profile, func.count())
                    .where(Certificate.state == "issued")
                    .group_by(Certificate.ca_id, Certificate.profile)):
                issued.add_metric([names.get(ca_id, str(ca_id)), profile], n)
            for ca_id, reason, n in s.execute(
                    select(Certificate.ca_id, Certificate.revocation_reason, func.count())
                    .where(Certificate.revoked_at.is_not(None))
                    .group_by(Certificate.ca_id, Certificate.revocation_reason)):
                revoked.add_metric([names.get(ca_id, str(ca_id)), reason or "unspecified"], n)
            for ca_id, state, n in s.execute(
                    select(Certificate.ca_id, Certificate.state, func.count())
                    .group_by(Certificate.ca_id, Certificate.state)):
                states.add_metric([names.get(ca_id, str(ca_id)), state], n)
            st = operations_status(s, self.svc.clock.now())
        for ca in st["cas"]:
            ca_expiry.add_metric([ca["name"]], ca["not_after"].timestamp())
            if ca["crl"] is not None:
                crl_next.add_metric([ca["name"]], ca["crl"]["next_update"].timestamp())
            ocsp_stale.add_metric([ca["name"]], ca["ocsp"]["stale"])
        for row in st["scheduler"]:
            lease.add_metric([row["name"]], row["expires_at"].timestamp())
        audit_seq.add_metric([], st["audit"]["head_seq"])
        last = st["audit"]["checkpoint"]
        cp_seq.add_metric([], last["seq"] if last else 0)
        if last is not None:
            cp_at.add_metric([], last["at"].timestamp())
        return [issued, revoked, states, ca_expiry, crl_next, ocsp_stale, lease, audit_seq,
                cp_seq, cp_at]


def _db_registry() -> CollectorRegistry:
    reg = current_app.extensions.get("govca.metrics")
    if reg is None:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(DatabaseCollector(services()))
        current_app.extensions["govca.metrics"] = reg
    return reg


@bp.get("/metrics")
def metrics_view():
    try:
        body = generate_latest(_db_registry())
    except SQLAlchemyError:
        body = b"# database unreachable: database-derived metrics omitted\n"
    body += generate_latest(metrics.exposition_registry())
    return Response(body, mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                    headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})
