"""approve-batch when the HSM goes away under a running gunicorn (issue 8): nothing is signed
or released for the batch, every request is back to 'submitted' (its approval undone, as the
single approve does), no reserved serial is left behind; once the token is back the same batch
is approved and issued, without restarting the server."""
from __future__ import annotations

import time

from sqlalchemy import func, select

from ca import audit
from ca.store.models import Certificate
from ca.store.models_ra import RaRequest
from tests.faults.helpers import HsmCopy, api_token, call, staff_ids, start_server, submit_issue


def _states(db) -> dict[str, int]:
    with db.transaction() as s:
        return dict(s.execute(select(Certificate.state, func.count()).group_by(
            Certificate.state)).all())


def test_approve_batch_with_the_hsm_gone_changes_nothing_then_succeeds(db, hsm_config,
                                                                       tmp_path):
    hsm = HsmCopy(hsm_config, tmp_path / "hsm")
    server = start_server(tmp_path, hsm_config, hsm=hsm)
    try:
        officer, approver = api_token(db, "ra.hanoi"), api_token(db, "approver.hanoi")
        subs = staff_ids(db)
        warm = [submit_issue(server.base, officer, sub) for sub in subs[:2]]
        st, _, out = call(server.base, "POST", "/api/v1/requests/approve-batch", approver,
                          {"ids": warm})
        assert st == 200 and out["issued"] == 2, out
        before = _states(db)

        hsm.remove("token")
        ids = [submit_issue(server.base, officer, sub) for sub in subs]
        st, hdrs, out = call(server.base, "POST", "/api/v1/requests/approve-batch", approver,
                             {"ids": ids})
        if st == 503:  # the CA could not be reached at all: the whole call is refused
            assert out["error"]["code"] == "hsm_unavailable" and int(hdrs["Retry-After"]) >= 1
        else:  # or each item says so
            assert st == 200, (st, out)
            assert [r["error"]["code"] for r in out["results"]] == ["hsm_unavailable"] * len(ids)
            assert all(r["status"] == 503 and r["request"]["state"] == "submitted"
                       for r in out["results"])
        for rid in ids:
            st, _, req = call(server.base, "GET", f"/api/v1/requests/{rid}", officer)
            assert st == 200 and req["state"] == "submitted" and not req["certificate_serial"]
            assert req["approved_by"] is None
        states = _states(db)
        assert states.get("issued") == before.get("issued") and not states.get("reserved")

        hsm.restore()
        deadline = time.monotonic() + 30
        while True:  # retried as Retry-After says until the workers reach the token again
            st, hdrs, out = call(server.base, "POST", "/api/v1/requests/approve-batch",
                                 approver, {"ids": ids})
            pending = [] if st != 200 else [r for r in out["results"] if not r["ok"]]
            if st == 200 and not pending:
                break
            assert st == 503 or all(r["error"]["code"] == "hsm_unavailable" for r in pending), \
                (st, out)
            assert time.monotonic() < deadline, out
            ids = [r["id"] for r in pending] if st == 200 else ids
            time.sleep(0.5)
        assert server.proc.poll() is None, "the server was restarted"
    finally:
        server.stop()
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
    with db.transaction() as s:
        rows = s.execute(select(RaRequest).where(RaRequest.subscriber_id.in_(subs))).scalars()
        assert all(r.state == "issued" and r.certificate_serial for r in rows)
        assert s.execute(select(func.count()).select_from(Certificate).where(
            Certificate.state == "reserved")).scalar_one() == 0
        assert not audit.verify_chain(s)
