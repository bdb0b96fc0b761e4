"""IssuanceService.issue_batch: the guarantees of `issue` with fewer transactions. A bad request
fails alone and burns no serial; every released certificate was linted, signed by the CA key and
stored with its audit events; a crash after the reservation leaves only reserved serials that
recovery abandons."""
from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding
from sqlalchemy import func, select

from ca import audit
from ca.clock import FixedClock
from ca.errors import CAError, LintFailed, PolicyViolation
from ca.issuance.service import IssuanceService, IssueRequest, recover_intents
from ca.store.models import AuditEvent, Certificate, CertificateAuthority, Subscriber
from tests import factories


def _staff(db, *names):
    with db.transaction() as s:
        return [s.execute(select(Subscriber.id).where(Subscriber.username == n)).scalar_one()
                for n in names]


def _counts(db):
    with db.transaction() as s:
        return (s.execute(select(func.count()).select_from(Certificate)).scalar(),
                s.execute(select(func.count()).select_from(AuditEvent)).scalar())


def test_batch_issues_the_good_requests_and_refuses_the_bad_one_alone(db, issuance):
    a, b, c = _staff(db, "staff.hanoi.1", "staff.hanoi.2", "staff.hanoi.3")
    with db.transaction() as s:
        s.get(Subscriber, c).email = "not an e-mail"  # fails the lint gate
    certs0, events0 = _counts(db)
    reqs = [IssueRequest(ca="issuing", profile="personal", actor="test", subscriber_id=sid,
                         csr=factories.csr()) for sid in (a, b, c, a)]
    reqs.insert(1, IssueRequest(ca="issuing", profile="personal", actor="test",
                                subscriber_id=a, csr=b"garbage"))
    out = issuance.issue_batch(reqs)
    assert [type(x).__name__ for x in out] == ["Certificate", "BadCSR", "Certificate",
                                               "LintFailed", "Certificate"]
    assert isinstance(out[3], LintFailed) and isinstance(out[1], CAError)
    certs, events = _counts(db)
    assert certs - certs0 == 3  # no serial burnt by the refused ones
    assert events - events0 == 6  # intent + issue per certificate
    with db.transaction() as s:
        ca = s.execute(select(CertificateAuthority).where(
            CertificateAuthority.name == "issuing")).scalar_one()
        ca_key = x509.load_der_x509_certificate(ca.certificate_der).public_key()
        for cert in (out[0], out[2], out[4]):
            row = s.get(Certificate, cert.id)
            assert row.state == "issued" and row.der == cert.der and row.serial == cert.serial
            parsed = x509.load_der_x509_certificate(row.der)
            ca_key.verify(parsed.signature, parsed.tbs_certificate_bytes, padding.PKCS1v15(),
                          parsed.signature_hash_algorithm)
            assert format(parsed.serial_number, "x") == row.serial
            actions = s.execute(select(AuditEvent.action).where(
                AuditEvent.target == f"issuing:{row.serial}").order_by(AuditEvent.seq)
            ).scalars().all()
            assert actions == ["cert.issue.intent", "cert.issue"]
        assert audit.verify_chain(s) == []


def test_the_same_key_twice_in_one_batch_for_two_holders_is_refused(db, issuance):
    a, b = _staff(db, "staff.hanoi.1", "staff.hanoi.2")
    key = factories.key("p256")
    out = issuance.issue_batch([
        IssueRequest(ca="issuing", profile="personal", actor="t", subscriber_id=a,
                     csr=factories.csr(key)),
        IssueRequest(ca="issuing", profile="personal", actor="t", subscriber_id=b,
                     csr=factories.csr(key))])
    assert out[0].state == "issued"
    assert isinstance(out[1], PolicyViolation) and out[1].code == "duplicate_key"


class Crash(Exception):
    pass


def test_crash_after_reserve_in_a_batch_releases_nothing_and_recovery_abandons_all(
        db, issuance, clock):
    a, b = _staff(db, "staff.hanoi.1", "staff.hanoi.2")

    def fault(point):
        if point == "after_reserve":
            raise Crash(point)
    svc = IssuanceService(issuance.db, issuance.keys, clock, issuance.profiles,
                          issuance.base_url, fault=fault)
    with pytest.raises(Crash):
        svc.issue_batch([IssueRequest(ca="issuing", profile="personal", actor="t",
                                      subscriber_id=sid, csr=factories.csr()) for sid in (a, b)])
    with db.transaction() as s:
        reserved = s.execute(select(Certificate).where(Certificate.state == "reserved")
                             ).scalars().all()
        assert len(reserved) == 2 and all(r.der is None for r in reserved)
        serials = sorted(f"issuing:{r.serial}" for r in reserved)
    later = FixedClock(clock.now() + dt.timedelta(minutes=10))
    assert sorted(recover_intents(db, later, older_than=dt.timedelta(minutes=5))) == serials
    with db.transaction() as s:
        assert s.execute(select(func.count()).select_from(Certificate).where(
            Certificate.state == "abandoned")).scalar() == 2
        assert audit.verify_chain(s) == []
