"""Transfers through the API: within a province (move -> change request -> second person ->
new certificate, same key, same expiry, old one revoked affiliationChanged) and between
provinces (release, accept: person, open requests and key devices move; source reads only its
custody period; a third province sees nothing)."""
from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from ca.store.models import Certificate, CertificateAuthority, Subscriber
from ca.store.models_ra import RaRequest
from ca.store.models_tokens import KeyDevice
from ca.store.models_transfer import SubscriberCustody, SubscriberTransfer
from ca.tokens.registry import register_device
from tests.ra.conftest import domain_id, staff_id, units
from tests.ra.test_workflow import csr_pem, issue_via_api
from tests.tools import openssl_verify, pem
from tests.transfers.conftest import events


def _cert(api, serial):
    st, body = api.get(f"/api/v1/certificates/{serial}")
    assert st == 200, body
    return body, x509.load_pem_x509_certificate(body["pem"].encode())


def _attr(cert, oid):
    return [a.value for a in cert.subject.get_attributes_for_oid(oid)]


def _verify(db, tmp_path, leaf_pem: str):
    with db.transaction() as s:
        cas = {c.name: c.certificate_der
               for c in s.execute(select(CertificateAuthority)).scalars()}
    r = openssl_verify(tmp_path, leaf_pem.encode(), pem(cas["root"]), pem(cas["issuing"]))
    assert r.returncode == 0, r.stderr + r.stdout


def test_within_province_change_keeps_key_and_expiry(api_as, db, clock, tmp_path):
    officer, approver = api_as("ra.hanoi"), api_as("approver.hanoi")
    sub = staff_id(db, "staff.hanoi.1")
    done = issue_via_api(officer, approver, sub)
    old_body, old = _cert(officer, done["certificate_serial"])
    clock.advance(days=10)
    target = units(db, "hanoi")[5]  # Phòng Kế hoạch - Tài chính, Sở Tài chính
    st, res = officer.post(f"/api/v1/subscribers/{sub}/transfer", {"organization_id": target})
    assert st == 200, res
    assert res["subscriber"]["organization_id"] == target
    [change] = res["change_requests"]
    assert (change["type"], change["state"], change["reason"], change["serial"]) == (
        "change", "submitted", "affiliationChanged", done["certificate_serial"])
    # the officer who raised it cannot approve it (two-person rule)
    st, err = officer.post(f"/api/v1/requests/{change['id']}/approve")
    assert st == 403
    st, issued = approver.post(f"/api/v1/requests/{change['id']}/approve")
    assert issued["state"] == "issued", issued
    new_body, new = _cert(officer, issued["certificate_serial"])
    assert _attr(new, NameOID.ORGANIZATION_NAME) == ["Sở Tài chính"]
    assert _attr(new, NameOID.ORGANIZATIONAL_UNIT_NAME) == ["Phòng Kế hoạch - Tài chính"]
    assert _attr(old, NameOID.ORGANIZATION_NAME) == ["Sở Nội vụ"]
    assert new.not_valid_after_utc == old.not_valid_after_utc
    assert new.public_key().public_bytes(*_spki()) == old.public_key().public_bytes(*_spki())
    assert new.serial_number != old.serial_number
    _verify(db, tmp_path, new_body["pem"])
    _, old_after = _cert(officer, done["certificate_serial"])
    st, old_now = officer.get(f"/api/v1/certificates/{done['certificate_serial']}")
    assert old_now["status"] == "revoked" and old_now["revocation_reason"] == "affiliationChanged"
    # the move is audited and the unit history records both units
    [ev] = events(db, "subscriber.transfer", f"subscriber:{sub}")
    assert ev.actor == "user:ra.hanoi"
    st, hist = officer.get(f"/api/v1/subscribers/{sub}/history")
    assert st == 200 and hist["current"] is True
    assert [p["organization_id"] for p in hist["placements"]][-1] == target
    assert len(hist["placements"]) == 2 and hist["placements"][0]["valid_to"]
    assert {c["serial"] for c in hist["certificates"]} == {done["certificate_serial"],
                                                          issued["certificate_serial"]}


def _spki():
    from cryptography.hazmat.primitives import serialization
    return serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo


def test_change_without_csr_needs_a_profile_that_keeps_keys(api_as, db, services):
    """The profile decides: with reuse_key_on_change off, a change without a CSR is refused."""
    officer, approver = api_as("ra.hanoi"), api_as("approver.hanoi")
    sub = staff_id(db, "staff.hanoi.4")
    done = issue_via_api(officer, approver, sub)
    import dataclasses
    services.profiles  # noqa: B018 - the app has its own copy; patch the app's profiles
    from flask import current_app  # noqa: F401
    app_profiles = officer.client.application.extensions["govca"].profiles
    saved = app_profiles["personal"]
    app_profiles["personal"] = dataclasses.replace(saved, reuse_key_on_change=False)
    try:
        st, err = officer.post("/api/v1/requests", {"type": "change", "subscriber_id": sub,
                                                    "serial": done["certificate_serial"]})
        assert st == 400 and err["error"]["field"] == "csr_pem", err
    finally:
        app_profiles["personal"] = saved
    st, ok = officer.post("/api/v1/requests", {"type": "change", "subscriber_id": sub,
                                               "serial": done["certificate_serial"]})
    assert st == 201 and ok["state"] == "submitted", ok


def _setup_person(api_as, db, clock):
    """staff.hanoi.3 with a valid certificate, an open (submitted) renewal and a key device."""
    officer, approver = api_as("ra.hanoi"), api_as("approver.hanoi")
    sub = staff_id(db, "staff.hanoi.3")
    done = issue_via_api(officer, approver, sub)
    st, renew = officer.post("/api/v1/requests", {"type": "renew", "subscriber_id": sub,
                                                  "serial": done["certificate_serial"],
                                                  "csr_pem": csr_pem()})
    assert st == 201, renew
    with db.transaction() as s:
        dev = register_device(s, holder_id=sub, device_type="TOKEN", label="Token 1",
                              actor="test", at=clock.now(), serial="TK-0001")
        dev_id = dev.id
    return sub, done["certificate_serial"], renew["id"], dev_id


def test_release_and_accept_between_provinces(api_as, db, clock, officers, tmp_path):
    hanoi, qn, qn_approver = api_as("ra.hanoi"), api_as("ra.quangninh"), \
        api_as("approver.quangninh")
    haiphong = api_as("ra.haiphong")
    sub, serial, renew_id, dev_id = _setup_person(api_as, db, clock)
    qn_unit = units(db, "quangninh")[1]
    clock.advance(days=30)
    st, tr = hanoi.post(f"/api/v1/subscribers/{sub}/transfer",
                        {"organization_id": qn_unit, "reason": "Điều động công tác"})
    assert st == 202, tr
    assert tr["state"] == "released" and tr["direction"] == "outgoing"
    # until accepted the person stays under Hà Nội, which can still act
    assert hanoi.get(f"/api/v1/subscribers/{sub}")[0] == 200
    assert qn.get(f"/api/v1/subscribers/{sub}")[0] == 404
    st, incoming = qn.get("/api/v1/transfers?direction=incoming")
    [seen] = incoming
    assert seen["full_name"] == "Lê Hoàng Phương" and seen["position"] == "Chuyên viên"
    assert seen["from_domain_name"] == "Thành phố Hà Nội"
    assert "subscriber_id" not in seen and "id_number" not in seen and "email" not in seen
    assert qn.get("/api/v1/transfers?direction=outgoing")[1] == []
    assert haiphong.get("/api/v1/transfers")[1] == []
    assert haiphong.get(f"/api/v1/transfers/{tr['id']}")[0] == 404
    assert [e.domain_id for e in events(db, "transfer.release")] == [domain_id(db, "hanoi")]
    assert [e.domain_id for e in events(db, "transfer.incoming")] == [
        domain_id(db, "quangninh")]

    clock.advance(days=1)
    st, acc = qn.post(f"/api/v1/transfers/{tr['id']}/accept")
    assert st == 200, acc
    assert acc["state"] == "accepted" and acc["accepted_by"] == "ra.quangninh"
    assert acc["moved_requests"] == [renew_id] and acc["moved_devices"] == [dev_id]
    [change] = acc["change_requests"]
    assert change["created_by"] == "ra.quangninh" and change["serial"] == serial
    HN, QN = domain_id(db, "hanoi"), domain_id(db, "quangninh")
    with db.transaction() as s:
        person = s.get(Subscriber, sub)
        assert person.domain_id == QN
        assert person.organization_id == qn_unit
        assert s.get(RaRequest, renew_id).domain_id == QN
        assert s.get(KeyDevice, dev_id).domain_id == QN
        custody = s.execute(select(SubscriberCustody).where(
            SubscriberCustody.subscriber_id == sub).order_by(SubscriberCustody.id)).scalars().all()
        assert [(c.domain_id, c.valid_to is None) for c in custody] == [
            (HN, False), (QN, True)]
        assert s.get(SubscriberTransfer, tr["id"]).open_subscriber_id is None
    # both sides audited
    assert sorted(e.domain_id for e in events(db, "transfer.accept")) == sorted(
        [domain_id(db, "hanoi"), domain_id(db, "quangninh")])
    assert qn.get(f"/api/v1/subscribers/{sub}")[0] == 200
    assert hanoi.get(f"/api/v1/subscribers/{sub}")[0] == 404
    # the moved renewal is now decided in Quảng Ninh
    assert api_as("approver.hanoi").post(f"/api/v1/requests/{renew_id}/approve")[0] == 404
    # the new L/O appears only through the change, approved by a second person
    clock.advance(days=1)
    st, issued = qn_approver.post(f"/api/v1/requests/{change['id']}/approve")
    assert issued["state"] == "issued", issued
    body, new = _cert(qn, issued["certificate_serial"])
    assert _attr(new, NameOID.LOCALITY_NAME) == ["Quảng Ninh"]
    _, old = _cert(qn, serial)
    assert _attr(old, NameOID.LOCALITY_NAME) == ["Hà Nội"]
    assert new.not_valid_after_utc == old.not_valid_after_utc
    assert new.public_key().public_bytes(*_spki()) == old.public_key().public_bytes(*_spki())
    _verify(db, tmp_path, body["pem"])
    assert qn.get(f"/api/v1/certificates/{serial}")[1]["revocation_reason"] == \
        "affiliationChanged"

    # the destination reads the whole history
    st, full = qn.get(f"/api/v1/subscribers/{sub}/history")
    assert st == 200 and full["current"] is True
    assert [p["domain"] for p in full["placements"]] == ["hanoi", "quangninh"]
    assert {c["serial"] for c in full["certificates"]} == {serial, issued["certificate_serial"]}
    first_issue = full["requests"][0]
    assert first_issue["type"] == "issue" and first_issue["approved_by"] == "approver.hanoi"
    assert qn.get(f"/api/v1/requests/{first_issue['id']}")[0] == 200  # closed, Hà Nội's
    # the source reads its custody period only, and nothing after
    st, past = hanoi.get(f"/api/v1/subscribers/{sub}/history")
    assert st == 200 and past["current"] is False, past
    assert [p["domain"] for p in past["placements"]] == ["hanoi"]
    assert {c["serial"] for c in past["certificates"]} == {serial}
    assert past["certificates"][0]["revoked_at"] is None  # revoked after it left
    assert {r["id"] for r in past["requests"]} == {first_issue["id"]}  # not the moved renewal
    assert "organization_id" not in past["subscriber"]
    assert issued["certificate_serial"] not in str(past)
    assert all(e["at"] < acc["accepted_at"] or e["target"].startswith("transfer:")
               for e in past["events"])
    assert any(e["action"] == "cert.issue" for e in past["events"])
    assert hanoi.get(f"/api/v1/certificates/{issued['certificate_serial']}")[0] == 404
    # a third province: exactly like a missing subscriber
    st, third = haiphong.get(f"/api/v1/subscribers/{sub}/history")
    st2, missing = haiphong.get("/api/v1/subscribers/999999/history")
    assert st == st2 == 404
    assert third["error"]["message"].replace(str(sub), "X") == \
        missing["error"]["message"].replace("999999", "X")


def test_refuse_and_withdraw(api_as, db, clock, officers):
    hanoi, qn = api_as("ra.hanoi"), api_as("ra.quangninh")
    sub = staff_id(db, "staff.hanoi.5")
    qn_unit = units(db, "quangninh")[0]
    st, tr = hanoi.post(f"/api/v1/subscribers/{sub}/transfer", {"organization_id": qn_unit})
    assert st == 202
    st, refused = qn.post(f"/api/v1/transfers/{tr['id']}/refuse", {"note": "Không đúng người"})
    assert st == 200 and refused["state"] == "refused" and refused["closed_by"] == "ra.quangninh"
    assert len(events(db, "transfer.refuse")) == 2
    st, tr2 = hanoi.post(f"/api/v1/subscribers/{sub}/transfer", {"organization_id": qn_unit})
    assert st == 202, tr2
    st, w = hanoi.post(f"/api/v1/transfers/{tr2['id']}/withdraw")
    assert st == 200 and w["state"] == "withdrawn"
    assert len(events(db, "transfer.withdraw")) == 2
    st, out = hanoi.get("/api/v1/transfers?direction=outgoing")
    assert [t["state"] for t in out] == ["withdrawn", "refused"]
    HN = domain_id(db, "hanoi")
    with db.transaction() as s:
        assert s.get(Subscriber, sub).domain_id == HN
