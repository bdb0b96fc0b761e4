"""A process that approves a batch of requests through ca.ra.approval_batch (what
POST /api/v1/requests/approve-batch runs): tests/faults/test_batch_sigkill.py kills it at a fault
point (GOVCA_TEST_FAULT) in the middle of the batch. Run as
`python -m tests.faults.batch_approver APPROVER REQUEST_ID...` with the usual GOVCA_* variables.
Prints `DONE <id> <state>` per request if it is not killed."""
from __future__ import annotations

import sys

from sqlalchemy import select

from ca.ra.approval_batch import approve_batch
from ca.ra.roles import Caller
from ca.store.models_ra import RaUser
from ra_portal.settings import Settings
from ra_portal.wiring import build_services


def main(argv: list[str]) -> int:
    username, ids = argv[0], [int(a) for a in argv[1:]]
    svc = build_services(Settings.from_env())
    with svc.db.transaction() as s:
        who = Caller.of(s.execute(select(RaUser).where(RaUser.username == username)).scalar_one())
    for req, err, _cert in approve_batch(svc.db, svc.clock, who, ids, svc.issuance):
        print("DONE", req.id if req is not None else "-", req.state if req is not None else err,
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
