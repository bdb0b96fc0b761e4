"""CRLs: numbering, content (reasons, invalidity date, AKI), delta CRLs, the root's CRL, history,
and pkilint on every kind."""
from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from sqlalchemy import select
from sqlalchemy import exc as sa_exc

from ca import revocation
from ca.errors import Conflict, InvalidInput, NotFound, PolicyViolation
from ca.store.models import CertificateAuthority
from ca.store.models_crl import PublishedCRL
from tests.crl.helpers import ca_cert, issue, lint as pkilint_, publisher


def test_full_crl_lists_revocations_with_reason_and_invalidity_date(services, clock, tmp_path):
    a, b, c = issue(services), issue(services, "staff.hanoi.2"), issue(services, "staff.hanoi.3")
    clock.advance(hours=1)
    revocation.revoke(services.db, clock, serial=a.serial, reason="keyCompromise", actor="t",
                      invalidity_date=clock.now() - dt.timedelta(days=2))
    revocation.revoke(services.db, clock, serial=b.serial, reason="superseded", actor="t")
    info = publisher(services).publish("issuing")
    crl = x509.load_der_x509_crl(info.der)
    issuer = ca_cert(services.db, "issuing")
    assert crl.is_signature_valid(issuer.public_key())
    assert crl.issuer == issuer.subject
    assert info.crl_number == 1 and crl.extensions.get_extension_for_class(
        x509.CRLNumber).value.crl_number == 1
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert crl.last_update_utc == clock.now().replace(microsecond=0)
    assert crl.next_update_utc - crl.last_update_utc == dt.timedelta(days=7)
    fresh = crl.extensions.get_extension_for_class(x509.FreshestCRL).value
    assert fresh[0].full_name[0].value == "http://127.0.0.1:8080/pki/crl/issuing-delta.crl"
    assert len(crl) == 2
    ea = crl.get_revoked_certificate_by_serial_number(int(a.serial, 16))
    assert ea.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.key_compromise
    assert ea.extensions.get_extension_for_class(x509.InvalidityDate).value.invalidity_date_utc \
        == (clock.now() - dt.timedelta(days=2)).replace(microsecond=0)
    eb = crl.get_revoked_certificate_by_serial_number(int(b.serial, 16))
    assert eb.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.superseded
    assert crl.get_revoked_certificate_by_serial_number(int(c.serial, 16)) is None
    (tmp_path / "full.crl").write_bytes(info.der)
    lint = pkilint_("crl", tmp_path / "full.crl")
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_crl_numbers_increase_and_history_is_kept(services, clock):
    pub = publisher(services)
    numbers = []
    for _ in range(3):
        numbers += [i.crl_number for i in pub.publish_all("issuing")]
        clock.advance(hours=1)
    assert numbers == [1, 2, 3, 4, 5, 6]
    hist = pub.history("issuing")
    assert [h.crl_number for h in hist] == [6, 5, 4, 3, 2, 1]
    assert pub.current("issuing").crl_number == 5
    assert pub.current("issuing", "delta").crl_number == 6
    # the CRL current at a past time
    assert pub.at("issuing", clock.now() - dt.timedelta(minutes=90)).crl_number == 3
    # a number can never be stored twice
    with pytest.raises(sa_exc.IntegrityError):
        with services.db.transaction() as s:
            ca_id = s.execute(select(CertificateAuthority.id).where(
                CertificateAuthority.name == "issuing")).scalar_one()
            s.add(PublishedCRL(ca_id=ca_id, kind="full", crl_number=5, this_update=clock.now(),
                               next_update=clock.now(), created_at=clock.now()))


def test_delta_crl_lists_only_changes_since_base(services, clock, tmp_path):
    old, new = issue(services), issue(services, "staff.hanoi.2")
    revocation.revoke(services.db, clock, serial=old.serial, reason="affiliationChanged",
                      actor="t")
    clock.advance(hours=2)
    pub = publisher(services)
    base = pub.publish("issuing")
    clock.advance(hours=1)
    revocation.revoke(services.db, clock, serial=new.serial, reason="cessationOfOperation",
                      actor="t")
    delta_info = pub.publish("issuing", "delta")
    delta = x509.load_der_x509_crl(delta_info.der)
    ind = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert ind.critical and ind.value.crl_number == base.crl_number
    assert delta.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == \
        base.crl_number + 1
    assert [r.serial_number for r in delta] == [int(new.serial, 16)]
    assert delta.next_update_utc <= x509.load_der_x509_crl(base.der).next_update_utc
    (tmp_path / "delta.crl").write_bytes(delta_info.der)
    lint = pkilint_("crl", tmp_path / "delta.crl")
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_delta_needs_a_base_and_unknown_ca_is_refused(services):
    with pytest.raises(PolicyViolation):
        publisher(services).publish("issuing", "delta")
    with pytest.raises(NotFound):
        publisher(services).publish("nope")


def test_root_crl_covers_the_issuing_ca(services, clock, tmp_path):
    with services.db.transaction() as s:
        issuing_serial = s.execute(select(CertificateAuthority.serial).where(
            CertificateAuthority.name == "issuing")).scalar_one()
    revocation.revoke(services.db, clock, serial=issuing_serial, reason="cACompromise",
                      actor="t", ca="root")
    info = publisher(services).publish("root")
    crl = x509.load_der_x509_crl(info.der)
    assert crl.is_signature_valid(ca_cert(services.db, "root").public_key())
    entry = crl.get_revoked_certificate_by_serial_number(int(issuing_serial, 16))
    assert entry is not None
    (tmp_path / "root.crl").write_bytes(info.der)
    lint = pkilint_("crl", tmp_path / "root.crl")
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_revocation_rules(services, clock):
    row = issue(services)
    with pytest.raises(InvalidInput):
        revocation.revoke(services.db, clock, serial=row.serial, reason="unspecified", actor="t")
    with pytest.raises(InvalidInput):  # invalidity date only for keyCompromise
        revocation.revoke(services.db, clock, serial=row.serial, reason="superseded", actor="t",
                          invalidity_date=clock.now())
    with pytest.raises(NotFound):
        revocation.revoke(services.db, clock, serial="abcdef", reason="superseded", actor="t")
    revocation.revoke(services.db, clock, serial=row.serial, reason="superseded", actor="t")
    with pytest.raises(Conflict) as exc:
        revocation.revoke(services.db, clock, serial=row.serial, reason="keyCompromise",
                          actor="t")
    assert exc.value.code == "already_revoked"


def test_revoke_many_is_revoke_for_each_in_one_transaction(services, clock):
    """revoke_many (the reorganisation worker's): each good item revoked with its own event, its
    pre-signed answer deleted; each refused item returned as revoke()'s error, changing
    nothing; the trail stays one valid chain."""
    from ca import audit
    from ca.store.models import AuditEvent, Certificate
    from ca.store.models_crl import OcspResponse
    from tests.crl.helpers import ocsp_service, responders
    responders(services).ensure("issuing")
    rows = [issue(services, f"staff.quangninh.{i}") for i in (1, 2, 3)]
    assert ocsp_service(services).presign() >= 3
    revocation.revoke(services.db, clock, serial=rows[2].serial, reason="superseded", actor="t")
    with services.db.transaction() as s:
        reserved = Certificate(ca_id=rows[0].ca_id, serial="7a" * 10, state="reserved",
                               subscriber_id=rows[0].subscriber_id, profile="personal",
                               subject="CN=x", not_before=clock.now(), not_after=clock.now(),
                               spki_sha256="00" * 32, tbs_sha256="00" * 32,
                               reserved_at=clock.now())
        s.add(reserved)
        events_before = s.execute(select(AuditEvent.seq).order_by(
            AuditEvent.seq.desc())).scalars().first()
    clock.advance(minutes=1)
    out = revocation.revoke_many(services.db, clock, [
        (rows[0].serial, "affiliationChanged", {"reorg_work": 1}),
        (rows[1].serial.upper(), "cessationOfOperation", None),   # any serial spelling
        (rows[2].serial, "superseded", None),                     # already revoked
        ("abcdef", "superseded", None),                           # never issued
        ("7a" * 10, "superseded", None),                          # reserved, never released
        (rows[0].serial, "superseded", None),                     # twice in one call
        (rows[1].serial, "unspecified", None),                    # not a reason GovCA writes
    ], actor="reorg", ca="issuing")
    assert out[:2] == [rows[0].serial, rows[1].serial]
    assert isinstance(out[2], Conflict) and out[2].code == "already_revoked"
    assert isinstance(out[3], NotFound)
    assert isinstance(out[4], Conflict) and "never released" in out[4].message
    assert isinstance(out[5], Conflict) and out[5].code == "already_revoked"
    assert isinstance(out[6], InvalidInput)
    with services.db.transaction() as s:
        got = {c.serial: c for c in s.execute(select(Certificate).where(
            Certificate.serial.in_([r.serial for r in rows] + ["7a" * 10]))).scalars()}
        assert got[rows[0].serial].revocation_reason == "affiliationChanged"
        assert got[rows[1].serial].revocation_reason == "cessationOfOperation"
        assert got[rows[0].serial].revoked_at == clock.now().replace(microsecond=0)
        assert got[rows[2].serial].revocation_reason == "superseded"  # unchanged
        assert got[rows[2].serial].revoked_at < got[rows[0].serial].revoked_at
        assert got["7a" * 10].revoked_at is None
        # the pre-signed "good" answers of the two revoked now are gone, no other
        left = set(s.execute(select(OcspResponse.serial)).scalars())
        assert rows[0].serial not in left and rows[1].serial not in left
        events = s.execute(select(AuditEvent).where(AuditEvent.seq > events_before)
                           .order_by(AuditEvent.seq)).scalars().all()
        assert [(e.action, e.target) for e in events] == [
            ("cert.revoke", f"issuing:{rows[0].serial}"),
            ("cert.revoke", f"issuing:{rows[1].serial}")]
        assert '"reorg_work":1' in events[0].details.replace(" ", "")
        assert events[0].domain_id is not None
        assert not audit.verify_chain(s)
    # and the CRL lists both with their reasons
    crl = x509.load_der_x509_crl(publisher(services).publish("issuing").der)
    for r, reason in ((rows[0], x509.ReasonFlags.affiliation_changed),
                      (rows[1], x509.ReasonFlags.cessation_of_operation)):
        entry = crl.get_revoked_certificate_by_serial_number(int(r.serial, 16))
        assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == reason


def test_status_at_a_past_time(services, clock):
    row = issue(services)
    issued_at = clock.now()
    clock.advance(days=30)
    publisher(services).publish("issuing")
    clock.advance(days=1)
    revocation.revoke(services.db, clock, serial=row.serial, reason="keyCompromise", actor="t")
    revoked_at = clock.now()
    clock.advance(days=1)
    publisher(services).publish("issuing")
    before = revocation.status_at(services.db, ca="issuing", serial=row.serial,
                                  at=revoked_at - dt.timedelta(hours=1))
    assert before.status == "good" and before.crl_number == 1
    after = revocation.status_at(services.db, ca="issuing", serial=row.serial,
                                 at=revoked_at + dt.timedelta(days=2))
    assert after.status == "revoked" and after.reason == "keyCompromise"
    assert after.crl_number == 2
    assert revocation.status_at(services.db, ca="issuing", serial=row.serial,
                                at=issued_at - dt.timedelta(days=1)).status == "unknown"
    assert revocation.status_at(services.db, ca="issuing", serial="1234567",
                                at=revoked_at).status == "unknown"
