"""Batches through the API (issue 8): POST /api/v1/requests/batch and
POST /api/v1/requests/approve-batch — per-item results, scope (another province's request is
"not found" exactly like a missing one), the two-person rule, a batch of 50 issued whose
certificates openssl verifies against the CA, the audit chain, nothing changed by bad input."""
from __future__ import annotations

import json

from cryptography import x509
from sqlalchemy import func, select

from ca import audit
from ca.store.models import AuditEvent, Certificate, CertificateAuthority
from ca.store.models_ra import RaRequest
from tests import factories
from tests.ra.conftest import staff_id
from tests.tools import openssl, pem, write


def csr_pem() -> str:
    return factories.csr(factories.key("p256")).decode()


def issue_item(sub_id: int, **extra) -> dict:
    return {"type": "issue", "subscriber_id": sub_id, "profile": "personal",
            "csr_pem": csr_pem(), **extra}


def counts(db) -> tuple[int, int, int]:
    with db.transaction() as s:
        return (s.execute(select(func.count()).select_from(RaRequest)).scalar_one(),
                s.execute(select(func.count()).select_from(Certificate)).scalar_one(),
                s.execute(select(func.count()).select_from(AuditEvent)).scalar_one())


def test_create_batch_reports_each_item_and_keeps_only_the_good_ones(api_as, db):
    officer = api_as("ra.hanoi")
    sub = staff_id(db, "staff.hanoi.1")
    other_province = staff_id(db, "staff.quangninh.1")
    before = counts(db)
    items = [issue_item(sub),
             {**issue_item(sub), "colour": "blue"},                 # unknown field
             issue_item(other_province),                             # outside the delegation
             {**issue_item(sub), "csr_pem": "not a CSR"},           # bad CSR
             issue_item(sub, submit=False),                          # a draft
             {"type": "issue", "subscriber_id": sub, "profile": "personal"},  # no CSR
             issue_item(sub)]
    st, out = officer.post("/api/v1/requests/batch", {"requests": items})
    assert st == 200, out
    res = out["results"]
    assert [r["index"] for r in res] == list(range(len(items)))
    assert [r["ok"] for r in res] == [True, False, False, False, True, False, True]
    assert out["created"] == 3 and out["failed"] == 4
    assert res[1]["error"]["code"] == "unknown_field" and res[1]["error"]["field"] == "colour"
    assert res[1]["status"] == 400
    assert res[2]["error"]["code"] == "unknown_subscriber"
    assert res[2]["error"]["field"] == "subscriber_id"
    assert res[3]["status"] == 400 and res[3]["error"]["field"] in ("csr", "csr_pem")
    assert res[5]["error"] == {"code": "required", "message": "csr_pem is required",
                               "field": "csr_pem"}
    assert res[0]["request"]["state"] == "submitted" and res[0]["request"]["due_at"]
    assert res[4]["request"]["state"] == "draft"
    # only the three good requests were written, each with ONE audit event
    after = counts(db)
    assert after[0] == before[0] + 3 and after[1] == before[1]
    assert after[2] == before[2] + 3
    good = [res[i]["request"]["id"] for i in (0, 4, 6)]
    with db.transaction() as s:
        rows = s.execute(select(AuditEvent).where(AuditEvent.target.in_(
            [f"request:{g}" for g in good])).order_by(AuditEvent.seq)).scalars().all()
        assert [e.action for e in rows] == ["request.create"] * 3
        details = [json.loads(e.details) for e in rows]
        assert details[0]["submitted"] is True and details[0]["due_at"]
        assert "submitted" not in details[1]
        assert audit.verify_chain(s) == []
    # batch-level "submit": false makes drafts of items that do not say otherwise
    st, out = officer.post("/api/v1/requests/batch", {"requests": [issue_item(sub)],
                                                      "submit": False})
    assert st == 200 and out["results"][0]["request"]["state"] == "draft"


def test_malformed_batches_are_400_and_change_nothing(api_as, db, client):
    officer, approver = api_as("ra.hanoi"), api_as("approver.hanoi")
    sub = staff_id(db, "staff.hanoi.2")
    before = counts(db)
    bad_bodies = [
        ({"requests": []}, "empty_batch"),
        ({"requests": {"type": "issue"}}, "wrong_type"),
        ({"requests": [issue_item(sub), 7]}, "wrong_type"),
        ({"requests": [issue_item(sub)], "extra": 1}, "unknown_field"),
        ({"requests": [issue_item(sub)], "submit": "yes"}, "wrong_type"),
        ({"requests": [{"type": "issue"}] * 501}, "too_many_items"),
        ({}, "wrong_type"),
    ]
    for body, code in bad_bodies:
        st, out = officer.post("/api/v1/requests/batch", body)
        assert st == 400 and out["error"]["code"] == code, (body if len(str(body)) < 300
                                                             else code, out)
        assert out["error"]["message"]
    bad_ids = [({"ids": []}, "empty_batch"), ({"ids": [1, 2, 1]}, "duplicate_id"),
               ({"ids": [1, True]}, "wrong_type"), ({"ids": ["1"]}, "wrong_type"),
               ({"ids": [0]}, "wrong_type"), ({"ids": [2**31]}, "wrong_type"),
               ({"ids": list(range(1, 502))}, "too_many_items"),
               ({"ids": [1], "force": True}, "unknown_field"), ({"ids": 5}, "wrong_type")]
    for body, code in bad_ids:
        st, out = approver.post("/api/v1/requests/approve-batch", body)
        assert st == 400 and out["error"]["code"] == code, (code, out)
    for url in ("/api/v1/requests/batch", "/api/v1/requests/approve-batch"):
        r = client.post(url, data="{not json", content_type="application/json",
                        headers={"Authorization": f"Bearer {officer.token}"})
        assert r.status_code == 400 and r.get_json()["error"]["message"]
        r = client.post(url, data=b"[1,2]", content_type="application/json",
                        headers={"Authorization": f"Bearer {officer.token}"})
        assert r.status_code == 400
        r = client.post(url, data="{}", content_type="application/json")  # no token
        assert r.status_code == 401
    assert counts(db) == before


def test_approve_batch_scope_two_person_rule_and_states(api_as, db):
    officer, approver = api_as("ra.hanoi"), api_as("approver.hanoi")
    qn_officer = api_as("ra.quangninh")
    operator = api_as("operator")
    sub = staff_id(db, "staff.hanoi.3")
    st, out = officer.post("/api/v1/requests/batch", {"requests": [
        issue_item(sub), issue_item(sub), issue_item(sub, submit=False)]})
    good, second, draft = (r["request"]["id"] for r in out["results"])
    st, qn = qn_officer.post("/api/v1/requests", issue_item(staff_id(db, "staff.quangninh.2")))
    assert st == 201
    st, own = operator.post("/api/v1/requests", issue_item(sub))  # operator may approve too
    assert st == 201
    with db.transaction() as s:
        missing = s.execute(select(func.max(RaRequest.id))).scalar_one() + 1000
    # an RA officer may not approve at all
    st, err = officer.post("/api/v1/requests/approve-batch", {"ids": [good]})
    assert st == 403 and err["error"]["code"] == "forbidden"
    before = counts(db)

    ids = [good, qn["id"], missing, draft, second]
    st, out = approver.post("/api/v1/requests/approve-batch", {"ids": ids})
    assert st == 200, out
    res = out["results"]
    assert [r["id"] for r in res] == ids and [r["index"] for r in res] == list(range(5))
    assert [r["ok"] for r in res] == [True, False, False, False, True]
    # another province's request answers exactly like one that does not exist
    other, gone = res[1], res[2]
    assert other["status"] == gone["status"] == 404
    assert other["error"]["code"] == gone["error"]["code"] == "not_found"
    assert other["error"]["message"].replace(str(qn["id"]), "N") == \
        gone["error"]["message"].replace(str(missing), "N")
    assert set(other) == set(gone) and "request" not in other
    assert res[3]["error"]["code"] == "wrong_state" and res[3]["status"] == 409
    for r in (res[0], res[4]):
        assert r["request"]["state"] == "issued" and r["request"]["approved_by"] == \
            "approver.hanoi"
        cert = x509.load_pem_x509_certificate(r["certificate"]["pem"].encode())
        assert format(cert.serial_number, "x") == r["certificate"]["serial"].lstrip("0") \
            and r["certificate"]["serial"] == r["request"]["certificate_serial"]
    assert out["issued"] == 2
    after = counts(db)
    assert after[1] == before[1] + 2  # two certificates, nothing for the refused ones
    with db.transaction() as s:
        assert s.get(RaRequest, qn["id"]).state == "submitted"
        assert s.get(RaRequest, draft).state == "draft"

    # the two-person rule: whoever prepared a request does not approve it, in a batch too
    st, out = operator.post("/api/v1/requests/approve-batch", {"ids": [own["id"]]})
    assert st == 200 and out["results"][0]["error"]["code"] == "two_person_rule"
    assert out["results"][0]["status"] == 403
    # approving again: already approved, nothing issued twice
    st, out = approver.post("/api/v1/requests/approve-batch", {"ids": [good, own["id"]]})
    assert [r["ok"] for r in out["results"]] == [False, True]
    assert out["results"][0]["error"]["code"] == "already_approved"
    with db.transaction() as s:
        assert s.execute(select(func.count()).select_from(Certificate).where(
            Certificate.subscriber_id == sub)).scalar_one() == 3
        events = s.execute(select(AuditEvent.action).where(
            AuditEvent.target == f"request:{good}").order_by(AuditEvent.seq)).scalars().all()
        assert events == ["request.create", "request.approve", "request.issued"]
        assert audit.verify_chain(s) == []


def test_approve_batch_revokes_and_refuses_restore(api_as, db):
    officer, approver = api_as("ra.hanoi"), api_as("approver.hanoi")
    sub = staff_id(db, "staff.hanoi.4")
    st, out = officer.post("/api/v1/requests/batch", {"requests": [issue_item(sub)]})
    rid = out["results"][0]["request"]["id"]
    st, out = approver.post("/api/v1/requests/approve-batch", {"ids": [rid]})
    serial = out["results"][0]["certificate"]["serial"]
    st, rv = officer.post("/api/v1/requests/batch", {"requests": [
        {"type": "revoke", "subscriber_id": sub, "serial": serial, "reason": "keyCompromise"},
        {"type": "revoke", "subscriber_id": sub, "serial": serial, "reason": "superseded"}]})
    assert [r["ok"] for r in rv["results"]] == [True, False]
    assert rv["results"][1]["error"]["code"] == "duplicate_request"
    rv_id = rv["results"][0]["request"]["id"]
    with db.transaction() as s:  # a restore request (issue 6) written as the domain would
        s.add(RaRequest(type="restore", state="submitted", domain_id=s.get(
            RaRequest, rv_id).domain_id, subscriber_id=sub, created_by="ra.hanoi",
            created_at=s.get(RaRequest, rv_id).created_at, submitted_by="ra.hanoi"))
        s.flush()
        restore_id = s.execute(select(func.max(RaRequest.id))).scalar_one()
    st, out = approver.post("/api/v1/requests/approve-batch", {"ids": [rv_id, restore_id]})
    assert st == 200
    done, refused = out["results"]
    assert done["ok"] and done["request"]["state"] == "done" and "certificate" not in done
    assert not refused["ok"] and refused["error"]["code"] == "not_batchable"
    assert refused["status"] == 422 and "alone" in refused["error"]["message"]
    st, c = officer.get(f"/api/v1/certificates/{serial}")
    assert c["status"] == "revoked" and c["revocation_reason"] == "keyCompromise"
    with db.transaction() as s:
        assert s.get(RaRequest, restore_id).state == "submitted"


def test_batch_of_50_is_issued_and_verifies_against_the_ca(api_as, db, tmp_path):
    officer, approver = api_as("ra.hanoi"), api_as("approver.hanoi")
    subs = [staff_id(db, f"staff.hanoi.{i}") for i in range(1, 6)]
    st, out = officer.post("/api/v1/requests/batch", {"requests": [
        issue_item(subs[i % 5]) for i in range(50)]})
    assert st == 200 and out["created"] == 50, out["results"][:2]
    ids = [r["request"]["id"] for r in out["results"]]
    st, out = approver.post("/api/v1/requests/approve-batch", {"ids": ids})
    assert st == 200 and out["issued"] == 50 and out["failed"] == 0, \
        [r for r in out["results"] if not r["ok"]][:2]
    serials = [r["certificate"]["serial"] for r in out["results"]]
    assert len(set(serials)) == 50
    with db.transaction() as s:
        cas = s.execute(select(CertificateAuthority)).scalars().all()
        root = next(c for c in cas if c.parent_id is None and c.name == "root")
        issuing = next(c for c in cas if c.name == "issuing")
        chain = (pem(root.certificate_der), pem(issuing.certificate_der))
        rows = {c.serial: c for c in s.execute(select(Certificate).where(
            Certificate.serial.in_(serials))).scalars()}
        assert all(rows[x].state == "issued" and rows[x].der for x in serials)
        # each certificate's cert.issue event names its request (what recovery relies on)
        named = [json.loads(d).get("request_id") for d in s.execute(select(
            AuditEvent.details).where(AuditEvent.action == "cert.issue",
                                      AuditEvent.target.in_([f"issuing:{x}" for x in serials])
                                      )).scalars()]
        assert sorted(named) == sorted(ids)
        assert audit.verify_chain(s) == []
        states = s.execute(select(RaRequest.state, RaRequest.certificate_serial).where(
            RaRequest.id.in_(ids))).all()
    assert all(st == "issued" for st, _ in states)
    assert sorted(x for _, x in states) == sorted(serials)
    leaves = []
    for k, r in enumerate(out["results"]):
        assert r["certificate"]["pem"].encode() == pem(rows[serials[k]].der)
        leaves.append(str(write(tmp_path / f"leaf{k}.pem", r["certificate"]["pem"].encode())))
    result = openssl("verify", "-CAfile", str(write(tmp_path / "root.pem", chain[0])),
                     "-untrusted", str(write(tmp_path / "issuing.pem", chain[1])), *leaves)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout.decode().count(": OK") == 50
