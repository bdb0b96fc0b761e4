"""The HSM goes away in the middle of a run (issue 8, point 5), for real: the server's SoftHSM
token directory is moved away under a running gunicorn, then put back.

Through the API every approval that needs a signature is refused with 503, Retry-After and a
JSON error; nothing is stored for it (the request is back to 'submitted', its reserved serial
marked failed and never released); the same approval succeeds once the token is back, without
restarting the server. A page gets the same 503 in Vietnamese."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from ca import audit
from ca.store.models import AuditEvent, Certificate
from ca.store.models_ra import RaRequest
from tests.faults.helpers import (HsmCopy, api_token, approve_until_done, call, staff_ids,
                                  start_server, submit_issue)


def _certificate_states(db) -> dict[str, int]:
    with db.transaction() as s:
        return dict(s.execute(select(Certificate.state, func.count()).group_by(
            Certificate.state)).all())


@pytest.mark.parametrize("how", ["token", "module"])
def test_hsm_outage_gives_503_and_recovers_without_restart(how, db, hsm_config, tmp_path):
    hsm = HsmCopy(hsm_config, tmp_path / "hsm")
    server = start_server(tmp_path, hsm_config, hsm=hsm)
    try:
        officer, approver = api_token(db, "ra.hanoi"), api_token(db, "approver.hanoi")
        subs = staff_ids(db)
        # The HSM works: two issuances (both gunicorn workers have probably logged in).
        early = []  # 503s while the HSM was still there (not expected, but counted)
        for sub in subs[:2]:
            done = approve_until_done(server.base, approver, submit_issue(server.base, officer, sub),
                                      time.monotonic() + 30, early)
            assert done["state"] == "issued", done
        before = _certificate_states(db)

        hsm.remove(how)
        refused = [submit_issue(server.base, officer, sub) for sub in subs]
        for rid in refused:
            st, hdrs, body = call(server.base, "POST", f"/api/v1/requests/{rid}/approve",
                                  approver)
            assert st == 503, (st, body)
            assert body["error"]["code"] == "hsm_unavailable", body
            assert int(hdrs["Retry-After"]) >= 1 and body["error"]["retry_after"] >= 1
            assert "\n" not in body["error"]["message"]
            # Nothing half-done: the request waits for approval again, without a certificate.
            st, _, req = call(server.base, "GET", f"/api/v1/requests/{rid}", officer)
            assert st == 200 and req["state"] == "submitted" and not req["certificate_serial"]
        # Reading still works while the HSM is down.
        st, _, listing = call(server.base, "GET", "/api/v1/certificates", officer)
        assert st == 200 and listing
        states = _certificate_states(db)
        assert states.get("issued") == before.get("issued"), states
        assert not states.get("reserved"), "a reserved serial was left behind"
        failed_now = states.get("failed", 0) - before.get("failed", 0)
        assert failed_now <= len(refused)  # serials reserved before the HSM answered

        hsm.restore()
        deadline = time.monotonic() + 30
        serials, again = set(), []
        for rid in refused:  # the same approvals, retried as Retry-After says
            done = approve_until_done(server.base, approver, rid, deadline, again)
            assert done["state"] == "issued" and done["certificate_serial"], done
            serials.add(done["certificate_serial"])
        assert len(serials) == len(refused)
        assert server.proc.poll() is None, "the server was restarted"
    finally:
        server.stop()
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]

    with db.transaction() as s:
        for rid in refused:
            req = s.get(RaRequest, rid)
            assert req.state == "issued"
            cert = s.execute(select(Certificate).where(
                Certificate.serial == req.certificate_serial)).scalar_one()
            assert cert.state == "issued" and cert.der
        undone = s.execute(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "request.approve.undone")).scalar_one()
        # one undo per 503, nothing else
        assert undone == len(refused) + len(again) + len(early), (undone, refused, again, early)
        assert all(code == "hsm_unavailable" for _, code in again)
        failed = s.execute(select(Certificate).where(Certificate.state == "failed")).scalars().all()
        assert all(c.der is None and c.failure_reason.startswith("hsm_unavailable")
                   for c in failed)
        assert s.execute(select(func.count()).select_from(Certificate).where(
            Certificate.state == "reserved")).scalar_one() == 0
        assert not audit.verify_chain(s)


def test_page_shows_503_in_vietnamese_when_the_module_is_missing(db, settings, clock, tmp_path,
                                                                 hsm_config, monkeypatch):
    """In-process, with a PKCS#11 module path that does not exist (a real load failure)."""
    import dataclasses

    from ra_portal import create_app
    from tests.web.conftest import PASSWORD, csrf_of
    from ca.ra.users import set_password
    from ca.store.models_ra import RaUser
    import pyotp

    broken = dataclasses.replace(hsm_config, module=str(tmp_path / "missing-pkcs11.so"))
    app = create_app(dataclasses.replace(settings, hsm=broken), clock=clock, testing=True)
    svc = app.extensions["govca"]
    try:
        officer = api_token(db, "ra.hanoi")
        client = app.test_client()
        sub = staff_ids(db)[0]
        from tests import factories
        r = client.post("/api/v1/requests", headers={"Authorization": f"Bearer {officer}"},
                        json={"type": "issue", "subscriber_id": sub, "profile": "personal",
                              "csr_pem": factories.csr().decode()})
        assert r.status_code == 201, r.get_json()
        rid = r.get_json()["id"]

        with db.transaction() as s:
            user = s.execute(select(RaUser).where(RaUser.username == "approver.hanoi")
                             ).scalar_one()
            set_password(s, user, PASSWORD, actor="test", at=clock.now())
            secret = user.totp_secret
        page = client.get("/login").get_data(as_text=True)
        otp = pyotp.TOTP(secret).at(clock.now()) if secret else ""
        r = client.post("/login", data={"csrf_token": csrf_of(page), "username": "approver.hanoi",
                                        "password": PASSWORD, "otp": otp})
        assert r.status_code == 302
        detail = client.get(f"/ra/requests/{rid}").get_data(as_text=True)
        r = client.post(f"/ra/requests/{rid}/approve", data={"csrf_token": csrf_of(detail)})
        assert r.status_code == 503, r.get_data(as_text=True)[:500]
        assert int(r.headers["Retry-After"]) >= 1
        text = r.get_data(as_text=True)
        assert "HSM" in text and "thử lại" in text, text[:800]
        with db.transaction() as s:
            assert s.get(RaRequest, rid).state == "submitted"
    finally:
        svc.db.engine.dispose()
