"""Serials in the database: unique per issuer by a constraint, collisions retried, hex form."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from cryptography import x509
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select

from ca import serial as serials
from ca.issuance.service import IssueRequest
from ca.store.models import AuditEvent, Certificate, CertificateAuthority, Subscriber
from tests import factories

AT = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)


def _ca_ids(db) -> dict[str, int]:
    with db.transaction() as s:
        return dict(s.execute(select(CertificateAuthority.name, CertificateAuthority.id)).all())


def _row(ca_id: int, serial: str) -> Certificate:
    return Certificate(ca_id=ca_id, serial=serial, state="reserved", profile="personal",
                       subject="CN=x", not_before=AT, not_after=AT, spki_sha256="0" * 64,
                       tbs_sha256="0" * 64, reserved_at=AT)


def test_duplicate_serial_per_issuer_is_refused_by_the_database(db):
    ids = _ca_ids(db)
    with db.transaction() as s:
        s.add(_row(ids["issuing"], "1234abcd"))
    with pytest.raises(sa_exc.IntegrityError):
        with db.transaction() as s:
            s.add(_row(ids["issuing"], "1234abcd"))
    # The same serial under another issuer is allowed (uniqueness is per CA).
    with db.transaction() as s:
        s.add(_row(ids["root"], "1234abcd"))
    with db.transaction() as s:
        assert s.execute(select(func.count()).select_from(Certificate).where(
            Certificate.serial == "1234abcd")).scalar_one() == 2


def _subscriber(db) -> int:
    with db.transaction() as s:
        return s.execute(select(Subscriber.id).where(
            Subscriber.username == "staff.hanoi.1")).scalar_one()


def test_issued_serial_matches_certificate(db, issuance):
    row = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                      subscriber_id=_subscriber(db), csr=factories.csr()))
    cert = x509.load_der_x509_certificate(row.der)
    assert re.fullmatch(r"[0-9a-f]+", row.serial)
    assert int(row.serial, 16) == cert.serial_number > 0
    assert cert.serial_number.bit_length() > 64
    assert (cert.serial_number.bit_length() + 8) // 8 <= 20


def test_serial_collision_during_reservation_is_retried(db, issuance, monkeypatch):
    sub = _subscriber(db)
    first = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                        subscriber_id=sub, csr=factories.csr()))
    taken = int(first.serial, 16)
    fresh = serials.generate()
    draws = iter([taken, taken, fresh])
    monkeypatch.setattr(serials, "generate", lambda: next(draws))
    with db.transaction() as s:
        events_before = s.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    second = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                         subscriber_id=sub, csr=factories.csr()))
    assert second.serial == serials.to_hex(fresh)
    assert x509.load_der_x509_certificate(second.der).serial_number == fresh
    with db.transaction() as s:
        # The colliding attempts left nothing behind: one new row, one intent, one issue event.
        assert s.execute(select(func.count()).select_from(Certificate).where(
            Certificate.serial == first.serial)).scalar_one() == 1
        assert s.execute(select(func.count()).select_from(AuditEvent)).scalar_one() \
            == events_before + 2
        assert s.get(Certificate, first.id).state == "issued"


def test_serial_exhaustion_is_a_clear_conflict(db, issuance, monkeypatch):
    sub = _subscriber(db)
    first = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                        subscriber_id=sub, csr=factories.csr()))
    monkeypatch.setattr(serials, "generate", lambda: int(first.serial, 16))
    from ca.errors import Conflict
    with pytest.raises(Conflict, match="unique serial"):
        issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                    subscriber_id=sub, csr=factories.csr()))
