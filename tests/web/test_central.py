"""Central pages: an organisation-seal request needs the domain approver and then a central
operator; the centre's queue shows it; the CA page reads the key state from the HSM."""
from __future__ import annotations

import io
import re

from sqlalchemy import select

from ca.store.models_ra import RaRequest
from tests import factories
from tests.ra.conftest import units


def test_organisation_seal_needs_the_centre(login_as, db):
    officer, approver, operator = (login_as("ra.hanoi"), login_as("approver.hanoi"),
                                   login_as("operator"))
    r = officer.post("/ra/subscribers/new", {
        "kind": "organization", "full_name": "Sở Y tế Thành phố Hà Nội", "id_type": "CCCD",
        "id_number": "001085777777", "email": "soyte@hanoi.gov.vn",
        "organization_id": str(units(db, "hanoi")[0]), "device_type": "HSM"})
    assert r.status_code == 302, r.get_data(as_text=True)[-800:]
    sub = int(re.search(r"/subscribers/(\d+)", r.headers["Location"]).group(1))
    r = officer.post(f"/ra/subscribers/{sub}/requests/new", {
        "type": "issue", "profile": "organization",
        "csr_file": (io.BytesIO(factories.csr(factories.key("p256"))), "seal.csr")},
        content_type="multipart/form-data")
    assert r.status_code == 302, r.get_data(as_text=True)[-800:]
    rid = int(re.search(r"/requests/(\d+)", r.headers["Location"]).group(1))
    assert approver.post(f"/ra/requests/{rid}/approve",
                         token_from=f"/ra/requests/{rid}").status_code == 302
    with db.transaction() as s:
        assert s.get(RaRequest, rid).state == "submitted"  # waits for the centre
    # The approver no longer sees a button; the operator finds it in the centre's queue.
    assert f"/ra/requests/{rid}/approve" not in approver.get("/ra/requests").get_data(as_text=True)
    queue = operator.get("/central/queue").get_data(as_text=True)
    assert f"/ra/requests/{rid}/approve" in queue and "Sở Y tế Thành phố Hà Nội" in queue
    assert operator.post(f"/ra/requests/{rid}/approve",
                         token_from="/central/queue").status_code == 302
    with db.transaction() as s:
        req = s.execute(select(RaRequest).where(RaRequest.id == rid)).scalar_one()
        assert req.state == "issued", req.failure_reason
        assert req.central_approved_by == "operator" and req.approved_by == "approver.hanoi"


def test_ca_page_shows_key_state_from_the_hsm(login_as):
    html = login_as("operator").get("/central/cas").get_data(as_text=True)
    assert html.count("có trong HSM") == 2  # root and issuing
    profiles = login_as("auditor").get("/central/profiles").get_data(as_text=True)
    assert "organization" in profiles and "sub-ca" in profiles
    domains = login_as("auditor").get("/central/domains").get_data(as_text=True)
    assert "approver.quangninh" in domains and "Tạm dừng phân cấp" not in domains
