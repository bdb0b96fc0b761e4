"""The operations view's figures: CA keys and expiry, CRL and OCSP freshness, the scheduler's
leader lease, pending issuance intents and the audit trail's checkpoint lag (read-only)."""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ca.clock import require_aware
from ca.errors import CAError
from ca.store.models import AuditHead, Certificate, CertificateAuthority
from ca.store.models_audit import AuditCheckpoint, AuditKey
from ca.store.models_crl import OcspResponse, PublishedCRL, SchedulerLease
from ca.store.models_ops import SchedulerRun


def _seconds(a: dt.datetime | None, b: dt.datetime) -> int | None:
    return None if a is None else int((a - b).total_seconds())


def _key_state(keys, key_id: str) -> dict[str, Any]:
    if keys is None:
        return {"checked": False}
    try:
        attrs = keys.attributes(bytes.fromhex(key_id))
    except CAError as exc:
        return {"checked": True, "reachable": False, "error": exc.message}
    except Exception as exc:  # noqa: BLE001 - any PKCS#11 failure: the key cannot be used
        return {"checked": True, "reachable": False, "error": type(exc).__name__}
    return {"checked": True, "reachable": True, "sensitive": attrs.get("sensitive"),
            "extractable": attrs.get("extractable")}


def operations_status(session: Session, now: dt.datetime, keys=None) -> dict[str, Any]:
    """One snapshot for the operations page (and monitoring). With `keys` (the KeyStore), each
    active CA's and the audit key's private-key object is read from the HSM."""
    now = require_aware(now, "now")
    cas = []
    for ca in session.execute(select(CertificateAuthority).where(
            CertificateAuthority.status == "active").order_by(CertificateAuthority.id)).scalars():
        crl = session.execute(select(PublishedCRL).where(
            PublishedCRL.ca_id == ca.id, PublishedCRL.kind == "full",
            PublishedCRL.published_at.is_not(None)).order_by(PublishedCRL.crl_number.desc())
            .limit(1)).scalar_one_or_none()
        ocsp_min, ocsp_stale, ocsp_total = session.execute(select(
            func.min(OcspResponse.next_update),
            func.count().filter(OcspResponse.next_update <= now), func.count()).where(
            OcspResponse.ca_id == ca.id)).one()
        cas.append({
            "name": ca.name, "not_after": ca.not_after,
            "days_left": (ca.not_after - now).days, "key": _key_state(keys, ca.key_id),
            "crl": None if crl is None else {
                "number": crl.crl_number, "this_update": crl.this_update,
                "next_update": crl.next_update,
                "seconds_to_next_update": _seconds(crl.next_update, now)},
            "ocsp": {"responses": ocsp_total, "stale": ocsp_stale,
                     "seconds_to_earliest_next_update": _seconds(ocsp_min, now)},
        })
    leases = [{"name": lease.name, "holder": lease.holder, "expires_at": lease.expires_at,
               "alive": lease.expires_at > now, "acquired_at": lease.acquired_at}
              for lease in session.execute(select(SchedulerLease).order_by(SchedulerLease.name))
              .scalars()]
    pending, oldest = session.execute(select(func.count(), func.min(Certificate.reserved_at))
                                      .where(Certificate.state == "reserved")).one()
    head = session.get(AuditHead, 1)
    last = session.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.number.desc())
                           .limit(1)).scalar_one_or_none()
    akey = session.execute(select(AuditKey).where(AuditKey.status == "active")
                           .order_by(AuditKey.id.desc()).limit(1)).scalar_one_or_none()
    head_seq = head.seq if head else 0
    return {
        "at": now, "cas": cas, "scheduler": leases,
        "intents": {"pending": pending, "oldest_reserved_at": oldest,
                    "oldest_age_seconds": _seconds(now, oldest) if oldest else None},
        "audit": {
            "head_seq": head_seq,
            "checkpoint": None if last is None else {
                "number": last.number, "seq": last.seq, "at": last.at,
                "age_seconds": _seconds(now, last.at)},
            "uncheckpointed_events": head_seq - (last.seq if last else 0),
            "key": None if akey is None else {
                "label": akey.key_label, "not_after": akey.not_after,
                "days_left": (akey.not_after - now).days, **_key_state(keys, akey.key_id)}},
    }


def last_runs(session: Session, recent: int = 20) -> dict[str, Any]:
    """The scheduler's last run of every job (with the last success and failure) and the most
    recent runs overall, newest first."""
    latest = select(SchedulerRun.job, func.max(SchedulerRun.id).label("id")).group_by(
        SchedulerRun.job).subquery()
    jobs = []
    for run in session.execute(select(SchedulerRun).join(latest, SchedulerRun.id == latest.c.id)
                               .order_by(SchedulerRun.job)).scalars():
        last_ok = session.execute(select(func.max(SchedulerRun.finished_at)).where(
            SchedulerRun.job == run.job, SchedulerRun.ok.is_(True))).scalar_one()
        failures = session.execute(select(func.count()).where(
            SchedulerRun.job == run.job, SchedulerRun.ok.is_(False))).scalar_one()
        jobs.append({**_run(run), "last_success_at": last_ok, "failures": failures})
    rows = session.execute(select(SchedulerRun).order_by(SchedulerRun.id.desc()).limit(recent)
                           ).scalars()
    return {"jobs": jobs, "recent": [_run(r) for r in rows]}


def _run(run: SchedulerRun) -> dict[str, Any]:
    seconds = None if run.finished_at is None else (run.finished_at - run.started_at
                                                     ).total_seconds()
    return {"job": run.job, "holder": run.holder, "started_at": run.started_at,
            "finished_at": run.finished_at, "ok": run.ok, "message": run.message,
            "seconds": seconds}
