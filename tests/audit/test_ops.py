"""Operations endpoints: /readyz (HSM + database) and /metrics (Prometheus text format)."""
from __future__ import annotations

import dataclasses

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from ca import metrics
from ca.issuance.service import IssueRequest
from ca.revocation import revoke
from ca.store.models import Certificate, Subscriber
from tests import factories


def test_healthz_and_readyz_when_everything_is_reachable(client):
    assert client.get("/healthz").status_code == 200
    r = client.get("/readyz")
    assert r.status_code == 200, r.json
    assert r.json["status"] == "ready"
    assert r.json["checks"]["database"] == {"ok": True}
    assert r.json["checks"]["hsm"] == {"ok": True, "ca": "root"}


def test_readyz_is_503_when_the_hsm_token_is_missing(db, settings, clock):
    from ra_portal import create_app
    bad = dataclasses.replace(settings, hsm=dataclasses.replace(settings.hsm,
                                                                token_label="no-such-token"))
    app = create_app(bad, clock=clock, testing=True)
    try:
        r = app.test_client().get("/readyz")
    finally:
        app.extensions["govca"].close()
    assert r.status_code == 503
    assert r.json["checks"]["database"]["ok"] is True
    assert r.json["checks"]["hsm"]["ok"] is False and "no-such-token" in r.json["checks"]["hsm"]["error"]


def test_readyz_is_503_when_the_database_is_unreachable(settings, clock, tmp_path):
    from ra_portal import create_app
    bad = dataclasses.replace(settings, database_url=f"sqlite:///{tmp_path}/missing/dir/x.db")
    app = create_app(bad, clock=clock, testing=True)
    try:
        r = app.test_client().get("/readyz")
        m = app.test_client().get("/metrics")
    finally:
        app.extensions["govca"].close()
    assert r.status_code == 503 and r.json["status"] == "unavailable"
    assert r.json["checks"]["database"]["ok"] is False
    assert m.status_code == 200 and b"database unreachable" in m.data


def _samples(body: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_issuance_and_revocation_like_sql(db, issuance, client, clock):
    with db.transaction() as s:
        subs = s.execute(select(Subscriber.id).where(Subscriber.kind == "person")
                         .order_by(Subscriber.id).limit(3)).scalars().all()
    serials = [issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="t",
                                           csr=factories.csr(), subscriber_id=sid)).serial
               for sid in subs]
    revoke(db, clock, serial=serials[0], reason="keyCompromise", actor="t")
    probe = metrics.counter("govca_test_probe_total", "a counter added by another module",
                            ("kind",))
    probe.labels(kind="x").inc(2)

    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    got = _samples(r.get_data(as_text=True))
    with db.transaction() as s:
        issued = s.execute(select(func.count()).select_from(Certificate).where(
            Certificate.state == "issued", Certificate.profile == "personal")).scalar_one()
        revoked = s.execute(select(func.count()).select_from(Certificate).where(
            Certificate.revoked_at.is_not(None))).scalar_one()
    assert issued >= 3
    assert got[("govca_certificates_issued_total", (("ca", "issuing"), ("profile", "personal")))] \
        == issued
    assert got[("govca_certificates_revoked_total", (("ca", "issuing"),
                                                     ("reason", "keyCompromise")))] == revoked == 1
    assert got[("govca_test_probe_total", (("kind", "x"),))] == 2
    assert ("govca_audit_head_seq", ()) in got
