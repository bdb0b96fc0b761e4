"""The issuance cycle against the demo PKI: independent tools accept what it produces."""
from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from ca.issuance.service import IssueRequest
from ca.store.models import Certificate, CertificateAuthority, Subscriber
from tests import factories
from tests.tools import openssl_verify, pem, pkilint


def _ca_pems(db):
    with db.transaction() as s:
        cas = {c.name: c.certificate_der for c in s.execute(select(CertificateAuthority)).scalars()}
    return pem(cas["root"]), pem(cas["issuing"])


def _subscriber(db, username="staff.hanoi.1"):
    with db.transaction() as s:
        return s.execute(select(Subscriber).where(Subscriber.username == username)).scalar_one()


def test_issued_certificate_verifies_with_openssl_and_lints_clean(db, issuance, tmp_path):
    sub = _subscriber(db)
    row = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                      csr=factories.csr(factories.key("rsa2048")),
                                      subscriber_id=sub.id))
    assert row.state == "issued"
    root, issuing = _ca_pems(db)
    result = openssl_verify(tmp_path, pem(row.der), root, issuing)
    assert result.returncode == 0, result.stderr
    (tmp_path / "leaf.der").write_bytes(row.der)
    lint = pkilint("cert", tmp_path / "leaf.der")
    assert lint.returncode == 0, lint.stdout
    for name, der in (("root", root), ("issuing", issuing)):
        p = tmp_path / f"{name}.pem"
        p.write_bytes(der)
        lint = pkilint("cert", p)
        assert lint.returncode == 0, (name, lint.stdout)


def test_subject_comes_from_registration_not_csr(db, issuance):
    sub = _subscriber(db)
    row = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                      csr=factories.csr(cn="Mallory CA"), subscriber_id=sub.id))
    cert = x509.load_der_x509_certificate(row.der)
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0]
    assert cn.value == "Nguyễn Thị Ánh Tuyết"
    assert cn._type.name == "UTF8String"
    # byte-exact NFC UTF-8 inside the DER
    assert "Nguyễn Thị Ánh Tuyết".encode("utf-8") in row.der
    loc = cert.subject.get_attributes_for_oid(x509.NameOID.LOCALITY_NAME)[0].value
    assert loc == "Hà Nội"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == [sub.email]
    with db.transaction() as s:
        stored = s.execute(select(Certificate).where(Certificate.serial == row.serial)).scalar_one()
        assert stored.der == cert.public_bytes(serialization.Encoding.DER)
        assert stored.not_after.tzinfo is not None


def test_personal_profile_extensions_and_urls(db, issuance, clock):
    import datetime as dt
    sub = _subscriber(db, "staff.quangninh.3")
    row = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                      csr=factories.csr(), subscriber_id=sub.id))
    cert = x509.load_der_x509_certificate(row.der)
    ext = cert.extensions
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.content_commitment
    assert not ku.value.key_cert_sign and not ku.value.key_encipherment
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {x509.oid.ExtendedKeyUsageOID.EMAIL_PROTECTION,
                        x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")}
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    dp = ext.get_extension_for_class(x509.CRLDistributionPoints).value
    assert dp[0].full_name[0].value == "http://127.0.0.1:8080/pki/crl/issuing.crl"
    aia = {a.access_method: a.access_location.value
           for a in ext.get_extension_for_class(x509.AuthorityInformationAccess).value}
    assert aia == {x509.oid.AuthorityInformationAccessOID.OCSP: "http://127.0.0.1:8080/ocsp",
                   x509.oid.AuthorityInformationAccessOID.CA_ISSUERS:
                       "http://127.0.0.1:8080/pki/certs/issuing.crt"}
    assert cert.not_valid_before_utc == clock.now()
    assert cert.not_valid_after_utc == clock.now() + dt.timedelta(days=1095)
    subject = [(a.oid, a.value) for a in cert.subject]
    assert subject[0] == (x509.NameOID.COUNTRY_NAME, "VN")
    assert subject[1] == (x509.NameOID.LOCALITY_NAME, "Quảng Ninh")
    assert subject[-1] == (x509.NameOID.COMMON_NAME, sub.full_name)


def test_tls_and_ocsp_profiles(db, issuance, tmp_path):
    from ca.names import SubjectData
    tls = issuance.issue(IssueRequest(ca="issuing", profile="tls-server", actor="test",
                                      csr=factories.csr(), dns_names=("dichvucong.gov.vn",),
                                      subject=SubjectData(common_name="dichvucong.gov.vn")))
    cert = x509.load_der_x509_certificate(tls.der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["dichvucong.gov.vn"]
    ocsp = issuance.issue(IssueRequest(ca="issuing", profile="ocsp-signing", actor="test",
                                       csr=factories.csr(),
                                       subject=SubjectData(common_name="GovCA OCSP")))
    ocert = x509.load_der_x509_certificate(ocsp.der)
    assert ocert.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert not [e for e in ocert.extensions if isinstance(e.value, x509.CRLDistributionPoints)]
    for name, der in (("tls", tls.der), ("ocsp", ocsp.der)):
        (tmp_path / f"{name}.der").write_bytes(der)
        result = pkilint("cert", tmp_path / f"{name}.der")
        assert result.returncode == 0, (name, result.stdout)


def test_reuse_key_recertifies_the_holders_key_only(db, issuance):
    """A change of information without a new CSR: the new certificate carries the old key."""
    from ca.errors import InvalidInput, NotFound, PolicyViolation
    sub = _subscriber(db)
    first = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                        csr=factories.csr(factories.key("rsa2048")),
                                        subscriber_id=sub.id))
    again = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test", csr=None,
                                        subscriber_id=sub.id, reuse_key_serial=first.serial,
                                        not_after=first.not_after))
    old = x509.load_der_x509_certificate(first.der)
    new = x509.load_der_x509_certificate(again.der)
    assert again.serial != first.serial
    assert new.public_key().public_numbers() == old.public_key().public_numbers()
    assert new.not_valid_after_utc == old.not_valid_after_utc
    other = _subscriber(db, "staff.hanoi.2")
    with pytest.raises(PolicyViolation):
        issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test", csr=None,
                                    subscriber_id=other.id, reuse_key_serial=first.serial))
    with pytest.raises(NotFound):
        issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test", csr=None,
                                    subscriber_id=sub.id, reuse_key_serial="1234abcd"))
    with pytest.raises(InvalidInput):
        issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test", csr=None,
                                    subscriber_id=sub.id, reuse_key_serial="zz"))


def test_store_refuses_a_reservation_abandoned_by_recovery_meanwhile(db, issuance, clock):
    """If recovery abandons a reservation while its certificate is being signed (a too short
    cut-off), the signed certificate is never released: the store step refuses it."""
    import datetime as dt

    from ca.errors import Conflict
    from ca.issuance.service import recover_intents

    def recover_during_signing(point: str) -> None:
        if point == "after_sign":
            assert recover_intents(db, clock, older_than=dt.timedelta(0))
    issuance.fault = recover_during_signing
    sub = _subscriber(db)
    with pytest.raises(Conflict) as err:
        issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                    csr=factories.csr(factories.key("p256")),
                                    subscriber_id=sub.id))
    assert err.value.code == "reservation_abandoned"
    with db.transaction() as s:
        rows = s.execute(select(Certificate).where(Certificate.subscriber_id == sub.id)).scalars().all()
        assert [r.state for r in rows] == ["abandoned"]
        assert rows[0].der is None
