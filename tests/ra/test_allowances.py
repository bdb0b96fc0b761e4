"""Per-domain allowances: what each RA domain may request (profiles, device types), enforced
on request creation (API 422 with a code) and edited by central operators on the domains page."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from ca.errors import InvalidInput, PermissionDenied
from ca.ra import allowances
from ca.store.models import AuditEvent, RaDomain, Subscriber
from ca.store.models_org import DomainAllowance
from ca.store.models_ra import RaRequest
from tests import factories
from tests.ra.conftest import domain_id, staff_id
from tests.web.conftest import csrf_of, login_as  # noqa: F401  (a shared fixture)


def _csr() -> str:
    return factories.csr(factories.key("p256")).decode()


def _issue(api, sub_id, profile="personal"):
    return api.post("/api/v1/requests", {"type": "issue", "subscriber_id": sub_id,
                                         "profile": profile, "csr_pem": _csr()})


def _n_requests(db):
    with db.transaction() as s:
        return len(s.execute(select(RaRequest.id)).all())


def test_defaults_allow_every_subscriber_profile_and_device(db, services):
    with db.transaction() as s:
        a = allowances.get(s, domain_id(db, "hanoi"), services.profiles)
    assert not a.explicit and "personal" in a.profiles and "organization" in a.profiles
    assert "tls-server" not in a.profiles and "sub-ca" not in a.profiles
    assert a.device_types == ("TOKEN", "SIM", "SOFT", "RSSP", "HSM")


def test_disallowed_profile_and_device_are_refused_via_the_api(db, services, api_as,
                                                              caller_of):
    hanoi = domain_id(db, "hanoi")
    op = caller_of("operator")
    with db.transaction() as s:
        allowances.set_allowance(s, services.clock, op, hanoi, ["organization"],
                                 ["TOKEN", "HSM"], services.profiles)
    api, sub = api_as("ra.hanoi"), staff_id(db, "staff.hanoi.1")
    before = _n_requests(db)
    st, body = _issue(api, sub)
    assert st == 422 and body["error"]["code"] == "profile_not_allowed", body
    assert "personal" in body["error"]["message"] and body["error"]["field"] == "profile"
    assert _n_requests(db) == before
    # Quảng Ninh is unaffected
    st, body = _issue(api_as("ra.quangninh"), staff_id(db, "staff.quangninh.1"))
    assert st == 201, body
    # the device type: allow the profile again, but not the subscriber's SIM
    with db.transaction() as s:
        allowances.set_allowance(s, services.clock, op, hanoi, ["personal"], ["TOKEN"],
                                 services.profiles)
        s.get(Subscriber, sub).device_type = "SIM"
    st, body = _issue(api, sub)
    assert st == 422 and body["error"]["code"] == "device_type_not_allowed", body
    with db.transaction() as s:
        s.get(Subscriber, sub).device_type = "TOKEN"
    st, body = _issue(api, sub)
    assert st == 201, body


def test_set_allowance_checks_input_and_role(db, services, caller_of):
    hanoi = domain_id(db, "hanoi")
    op, officer, auditor = (caller_of(u) for u in ("operator", "ra.hanoi", "auditor"))
    with db.transaction() as s:
        for bad_p, bad_d, field in ((["tls-server"], [], "profiles"), (["nope"], [], "profiles"),
                                    ("personal", [], "profiles"), ([], ["USB"], "device_types"),
                                    ([], None, "device_types")):
            with pytest.raises(InvalidInput) as e:
                allowances.set_allowance(s, services.clock, op, hanoi, bad_p, bad_d,
                                         services.profiles)
            assert e.value.field == field
        for who in (officer, auditor):
            with pytest.raises(PermissionDenied):
                allowances.set_allowance(s, services.clock, who, hanoi, [], [],
                                         services.profiles)
        assert s.get(DomainAllowance, hanoi) is None


def test_central_domains_page_edits_allowances(db, login_as):  # noqa: F811
    hanoi = domain_id(db, "hanoi")
    op = login_as("operator")
    page = op.get("/central/domains").get_data(as_text=True)
    assert f'/central/domains/{hanoi}/allowance' in page
    r = op.post(f"/central/domains/{hanoi}/allowance",
                {"profile": ["personal"], "device_type": ["TOKEN", "SIM"]},
                token_from="/central/domains")
    assert r.status_code == 302
    page = op.get("/central/domains").get_data(as_text=True)
    assert "Đã cập nhật mẫu chứng thư" in page
    row = re.search(r'<tr data-domain="hanoi">.*?</tr>', page, re.S).group(0)
    assert "personal; TOKEN, SIM" in row
    with db.transaction() as s:
        a = s.get(DomainAllowance, hanoi)
        assert a.profiles == ["personal"] and a.device_types == ["TOKEN", "SIM"]
        ev = s.execute(select(AuditEvent).where(AuditEvent.action == "domain.allowance")) \
            .scalars().all()
        assert len(ev) == 1 and ev[0].actor == "user:operator"


def test_domains_page_bad_input_csrf_and_roles(db, login_as):  # noqa: F811
    hanoi = domain_id(db, "hanoi")
    op = login_as("operator")
    r = op.post(f"/central/domains/{hanoi}/allowance", {"profile": ["sub-ca"]},
                token_from="/central/domains")
    assert r.status_code == 400
    assert "Mẫu chứng thư" in r.get_data(as_text=True)
    r = op.post(f"/central/domains/{hanoi}/allowance", {"profile": ["personal"]}, csrf=False)
    assert r.status_code in (400, 403)
    r = op.post("/central/domains/999999/allowance", {"profile": ["personal"]},
                token_from="/central/domains")
    assert r.status_code == 404
    for who in ("auditor", "ra.hanoi"):
        b = login_as(who)
        r = b.post(f"/central/domains/{hanoi}/allowance", {"profile": ["personal"]},
                   token_from="/")
        assert r.status_code in (403, 404), who
    with db.transaction() as s:
        assert s.get(DomainAllowance, hanoi) is None
        assert s.get(RaDomain, hanoi).status == "active"
