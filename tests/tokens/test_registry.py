"""The device registry: audited transitions, certificates on a device, end of life."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from ca.errors import Conflict, InvalidInput, NotFound
from ca.issuance.service import IssueRequest
from ca.store.models import AuditEvent, Certificate
from ca.tokens import registry
from tests import factories
from tests.tokens.conftest import holder_id


def _issued_device(db, clock, issuance, serial="TOK-1"):
    hid = holder_id(db)
    cert = issuance.issue(IssueRequest(ca="issuing", profile="personal", csr=factories.csr(),
                                       actor="officer", subscriber_id=hid))
    with db.transaction() as s:
        dev = registry.register_device(s, holder_id=hid, device_type="TOKEN", label="tok",
                                       serial=serial, model="SafeNet 5110", actor="officer",
                                       at=clock.now())
        registry.transition(s, dev, "initialised", actor="officer", at=clock.now())
        registry.attach_certificate(s, dev, cert.id, actor="officer", at=clock.now())
        registry.transition(s, dev, "issued", actor="officer", at=clock.now())
        return dev.id, cert


def test_transitions_are_checked_and_audited(db, clock, issuance):
    dev_id, cert = _issued_device(db, clock, issuance)
    with db.transaction() as s:
        dev = registry.get_device(s, dev_id)
        with pytest.raises(Conflict):
            registry.transition(s, dev, "restored", actor="officer", at=clock.now())
    with db.transaction() as s:
        events = [(e.action, e.details) for e in s.execute(select(AuditEvent).where(
            AuditEvent.target == f"device:{dev_id}").order_by(AuditEvent.seq)).scalars()]
        assert [a for a, _ in events] == ["device.register", "device.state",
                                          "device.certificate", "device.state"]
        assert '"to":"issued"' in events[-1][1]
        assert registry.get_device(s, dev_id).state == "issued"
        assert [c.serial for c in registry.device_certificates(s, dev_id)] == [cert.serial]


def test_bad_registrations(db, clock):
    with db.transaction() as s:
        hid, other = holder_id(s), holder_id(s, "staff.hanoi.3")
        with pytest.raises(InvalidInput):
            registry.register_device(s, holder_id=hid, device_type="FLOPPY", label="x",
                                     actor="o", at=clock.now())
        with pytest.raises(NotFound):
            registry.register_device(s, holder_id=999999, device_type="TOKEN", label="x",
                                     actor="o", at=clock.now())
        registry.register_device(s, holder_id=hid, device_type="TOKEN", label="x",
                                 serial="DUP", actor="o", at=clock.now())
        with pytest.raises(Conflict) as err:
            registry.register_device(s, holder_id=other,
                                     device_type="TOKEN", label="y", serial="DUP", actor="o",
                                     at=clock.now())
        assert err.value.code == "duplicate_device"


def test_lost_token_returns_certificates_then_direct_revocation(db, clock, issuance):
    dev_id, cert = _issued_device(db, clock, issuance)
    with pytest.raises(Conflict):
        registry.revoke_device_certificates(db, clock, dev_id, actor="operator")
    with db.transaction() as s:
        pending = registry.end_device(s, dev_id, "lost", actor="ra.hanoi", at=clock.now(),
                                      reason="left in a taxi")
    assert [(p.serial, p.reason, p.ca) for p in pending] == [(cert.serial, "keyCompromise",
                                                              "issuing")]
    with db.transaction() as s:
        with pytest.raises(Conflict):
            registry.transition(s, registry.get_device(s, dev_id), "issued", actor="x",
                                at=clock.now())
    assert registry.revoke_device_certificates(db, clock, dev_id, actor="operator") == [cert.serial]
    with db.transaction() as s:
        row = s.get(Certificate, cert.id)
        assert row.revoked_at is not None and row.revocation_reason == "keyCompromise"
        actions = [e.action for e in s.execute(select(AuditEvent)).scalars()]
        assert "device.revocations_due" in actions and "cert.revoke" in actions
        # Nothing left due; a second run revokes nothing and fails nothing.
        assert registry.certificates_to_revoke(s, registry.get_device(s, dev_id),
                                               clock.now()) == []
    assert registry.revoke_device_certificates(db, clock, dev_id, actor="operator") == []


def test_retired_token_certificates_cease(db, clock, issuance):
    dev_id, cert = _issued_device(db, clock, issuance)
    with db.transaction() as s:
        pending = registry.end_device(s, dev_id, "retired", actor="ra.hanoi", at=clock.now())
        assert pending[0].reason == "cessationOfOperation"
        with pytest.raises(InvalidInput):
            registry.end_device(s, dev_id, "issued", actor="x", at=clock.now())


def test_attach_refuses_another_holders_certificate(db, clock, issuance):
    other = issuance.issue(IssueRequest(ca="issuing", profile="personal", csr=factories.csr(),
                                        actor="officer",
                                        subscriber_id=holder_id(db, "staff.hanoi.4")))
    with db.transaction() as s:
        dev = registry.register_device(s, holder_id=holder_id(s), device_type="TOKEN",
                                       label="tok", actor="o", at=clock.now())
        with pytest.raises(Conflict):
            registry.attach_certificate(s, dev, other.id, actor="o", at=clock.now())
