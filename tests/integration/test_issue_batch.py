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


def test_batch_subjects_and_org_versions_are_those_of_the_one_by_one_reads(db, issuance,
                                                                           clock):
    """The batched Core reads give byte for byte the subject `subject_for` builds from the ORM
    (NFC UTF8String names, every organisation level), and the current organisation version."""
    from ca.names import build_name
    from ca.store.models_org import subscriber_org_version_id
    from ca.subjects import subject_for
    with db.transaction() as s:
        people = s.execute(select(Subscriber.id).where(Subscriber.kind == "person")
                           .order_by(Subscriber.organization_id.desc(), Subscriber.id)
                           ).scalars().all()
        # organisation seals of a top agency (no parent) and of deeper organisations
        from ca.registry import add_subscriber
        from ca.store.models import Organization
        org_rows = s.execute(select(Organization).order_by(Organization.level,
                                                           Organization.id)).scalars().all()
        seal_orgs = [org_rows[0], org_rows[len(org_rows) // 2], org_rows[-1]]
        orgs = [add_subscriber(s, organization_id=o.id, full_name=o.name[:64],
                               id_number=f"ORG{o.id:09d}", email=f"seal{o.id}@example.gov.vn",
                               at=clock.now(), actor="t", kind="organization").id
                for o in seal_orgs]
        # one person per organisation (different depths, agencies, domains), some seals
        seen, picked = set(), []
        for sid in people:
            org_id = s.get(Subscriber, sid).organization_id
            if org_id not in seen:
                seen.add(org_id)
                picked.append(sid)
        picked = picked[:12]
    reqs = [IssueRequest(ca="issuing", profile="personal", actor="t", subscriber_id=sid,
                         csr=factories.csr()) for sid in picked]
    reqs += [IssueRequest(ca="issuing", profile="organization", actor="t", subscriber_id=sid,
                          csr=factories.csr()) for sid in orgs[:3]]
    assert len(picked) >= 5 and orgs  # several organisations, and organisation seals
    assert len({r.subscriber_id for r in reqs}) == len(reqs)
    out = issuance.issue_batch(reqs)
    assert all(not isinstance(c, Exception) for c in out), out
    with db.transaction() as s:
        for req, cert in zip(reqs, out):
            sub = s.get(Subscriber, req.subscriber_id)
            expected = build_name(subject_for(s, sub)).public_bytes()
            got = x509.load_der_x509_certificate(cert.der).subject.public_bytes()
            assert got == expected, sub.full_name
            row = s.get(Certificate, cert.id)
            assert row.organization_version_id == subscriber_org_version_id(s, sub.id)
            assert row.organization_version_id is not None


def test_a_reservation_abandoned_while_the_batch_is_signed_fails_alone(db, issuance, clock):
    """Recovery abandons one reservation while the batch is being signed (in threads): that
    certificate is never stored nor released, the others are."""
    a, b, c = _staff(db, "staff.hanoi.1", "staff.hanoi.2", "staff.hanoi.3")
    done = []

    def abandon_b(point):
        if point == "after_sign" and not done:
            done.append(True)
            with db.transaction() as s:
                row = s.execute(select(Certificate).where(
                    Certificate.subscriber_id == b, Certificate.state == "reserved")).scalar_one()
                row.state = "abandoned"
    svc = IssuanceService(issuance.db, issuance.keys, clock, issuance.profiles,
                          issuance.base_url, fault=abandon_b)
    assert svc.sign_threads > 1
    out = svc.issue_batch([IssueRequest(ca="issuing", profile="personal", actor="t",
                                        subscriber_id=sid, csr=factories.csr())
                           for sid in (a, b, c)])
    assert [type(x).__name__ for x in out] == ["Certificate", "Conflict", "Certificate"]
    assert out[1].code == "reservation_abandoned"
    with db.transaction() as s:
        rows = {r.subscriber_id: r for r in s.execute(select(Certificate).where(
            Certificate.subscriber_id.in_((a, b, c)))).scalars()}
        assert rows[b].state == "abandoned" and rows[b].der is None
        assert rows[b].fingerprint_sha256 is None
        assert rows[a].state == rows[c].state == "issued"
        issued = s.execute(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "cert.issue",
            AuditEvent.target == f"issuing:{rows[b].serial}")).scalar()
        assert issued == 0
        assert audit.verify_chain(s) == []


def test_unknown_ca_and_known_key_fail_alone_in_a_batch(db, issuance):
    a, b = _staff(db, "staff.hanoi.1", "staff.hanoi.2")
    key = factories.key("p256")
    first = issuance.issue_batch([IssueRequest(ca="issuing", profile="personal", actor="t",
                                               subscriber_id=a, csr=factories.csr(key))])
    assert not isinstance(first[0], Exception)
    certs0, _ = _counts(db)
    out = issuance.issue_batch([
        IssueRequest(ca="nope", profile="personal", actor="t", subscriber_id=a,
                     csr=factories.csr()),
        IssueRequest(ca="issuing", profile="personal", actor="t", subscriber_id=b,
                     csr=factories.csr(key)),  # a's key, for b
        IssueRequest(ca="issuing", profile="personal", actor="t", subscriber_id=a,
                     csr=factories.csr(key)),  # a's key again, for a: allowed
        IssueRequest(ca="issuing", profile="personal", actor="t", subscriber_id=999999,
                     csr=factories.csr()),
    ])
    assert [type(x).__name__ for x in out] == ["NotFound", "PolicyViolation", "Certificate",
                                               "NotFound"]
    assert out[1].code == "duplicate_key" and out[3].field == "subscriber"
    assert _counts(db)[0] - certs0 == 1
