"""Bad input through the issuance service: a clear error, nothing stored, no serial reserved."""
from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from ca.csr import MAX_CSR_BYTES
from ca.errors import CAError, InvalidInput, NotFound, PolicyViolation
from ca.issuance.service import IssueRequest
from ca.names import SubjectData
from ca.store.models import AuditEvent, Certificate, CertificateAuthority, Subscriber
from tests import factories
from tests.unit import samples


def counts(db) -> tuple[int, int]:
    with db.transaction() as s:
        return (s.execute(select(func.count()).select_from(Certificate)).scalar_one(),
                s.execute(select(func.count()).select_from(AuditEvent)).scalar_one())


def subscriber_id(db, username="staff.hanoi.1") -> int:
    with db.transaction() as s:
        return s.execute(select(Subscriber.id).where(Subscriber.username == username)).scalar_one()


def refused(db, issuance, error, code, csr=None, **req) -> CAError:
    """Issue, expect `error` with `code`, and check that the database did not change."""
    before = counts(db)
    fields = {"ca": "issuing", "profile": "personal", "actor": "test",
              "subscriber_id": subscriber_id(db), **req}
    with pytest.raises(error) as exc:
        issuance.issue(IssueRequest(csr=csr if csr is not None else factories.csr(), **fields))
    err = exc.value
    assert err.code == code, (err.code, err.message)
    assert err.message and "\n" not in err.message and "Traceback" not in err.message
    assert len(err.message) < 200
    assert counts(db) == before, "a refused request must store nothing and reserve no serial"
    return err


def test_good_request_changes_counts(db, issuance):
    """The counting helper can see a change: a good request adds a row and two events."""
    before = counts(db)
    issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                subscriber_id=subscriber_id(db), csr=factories.csr()))
    rows, events = counts(db)
    assert rows == before[0] + 1 and events == before[1] + 2


@pytest.mark.parametrize("make,code", [
    (lambda: b"-----BEGIN CERTIFICATE REQUEST-----\n%%%\n-----END CERTIFICATE REQUEST-----\n",
     "csr_malformed"),
    (lambda: b"\x30\x82\x02\x00" + b"\xff" * 40, "csr_malformed"),
    (lambda: samples.ber_not_der(factories.csr(encoding="der")), "csr_not_der"),
    (lambda: samples.broken_signature(factories.csr(factories.key("rsa2048"), encoding="der")),
     "csr_bad_signature"),
    (samples.sha1_csr, "csr_weak_hash"),
    (samples.oversized_csr, "csr_too_large"),
], ids=["malformed-pem", "garbage-der", "ber-not-der", "broken-signature", "sha1", "oversized"])
def test_bad_csr_encodings(db, issuance, make, code):
    refused(db, issuance, InvalidInput, code, csr=make())


@pytest.mark.parametrize("kind,code", [("rsa1024", "key_size"), ("rsa-e3", "key_exponent"),
                                       ("dsa2048", "key_type"), ("p521", "key_curve"),
                                       ("k256", "key_curve")])
def test_bad_keys(db, issuance, kind, code):
    refused(db, issuance, PolicyViolation, code, csr=factories.csr(factories.key(kind)))


@pytest.mark.parametrize("which", ["basic_constraints", "key_usage"])
def test_csr_asking_for_ca_rights(db, issuance, which):
    err = refused(db, issuance, PolicyViolation, "csr_requests_ca",
                  csr=samples.ca_rights_csrs()[which])
    assert "CA" in err.message


def test_csr_subject_with_control_characters(db, issuance):
    refused(db, issuance, InvalidInput, "control_character",
            csr=factories.csr(cn="Nguyễn Văn\x1bA"))


def _set_name(db, sub_id: int, name: str) -> None:
    """Legacy data written past the registry's checks (as an old import might have)."""
    with db.transaction() as s:
        s.get(Subscriber, sub_id).full_name = name


def test_subscriber_name_with_control_characters(db, issuance):
    sub = subscriber_id(db)
    _set_name(db, sub, "Trần Văn\x07Đức")
    err = refused(db, issuance, InvalidInput, "control_character", subscriber_id=sub)
    assert "U+0007" in err.message


def test_over_long_common_name(db, issuance):
    sub = subscriber_id(db)
    _set_name(db, sub, "Đ" * 65)
    err = refused(db, issuance, InvalidInput, "too_long", subscriber_id=sub)
    assert "65 characters" in err.message and "64" in err.message


def test_over_long_explicit_subject(db, issuance):
    refused(db, issuance, InvalidInput, "too_long", profile="tls-server", subscriber_id=None,
            subject=SubjectData(common_name="a" * 65), dns_names=("a.gov.vn",))


def test_non_ascii_email(db, issuance):
    """rfc822Name is an IA5String; cryptography would raise a bare ValueError deep inside."""
    sub = subscriber_id(db)
    with db.transaction() as s:
        s.get(Subscriber, sub).email = "nguyễn@hanoi.gov.vn"
    err = refused(db, issuance, InvalidInput, "not_ascii", subscriber_id=sub)
    assert "ASCII" in err.message


def test_non_ascii_dns_name(db, issuance):
    err = refused(db, issuance, InvalidInput, "not_ascii", profile="tls-server",
                  subscriber_id=None, subject=SubjectData(common_name="x"),
                  dns_names=("dịchvụcông.gov.vn",))
    assert "xn--" in err.message


def test_tls_without_dns_name(db, issuance):
    refused(db, issuance, InvalidInput, "invalid_input", profile="tls-server",
            subscriber_id=None, subject=SubjectData(common_name="x"))


def test_unknown_profile(db, issuance):
    err = refused(db, issuance, InvalidInput, "invalid_input", profile="nope")
    assert "unknown profile 'nope'" in err.message


def test_unknown_ca(db, issuance):
    err = refused(db, issuance, NotFound, "not_found", ca="nope")
    assert "no CA named 'nope'" in err.message


def test_unknown_subscriber(db, issuance):
    refused(db, issuance, NotFound, "not_found", subscriber_id=999999)


def test_ca_profile_is_not_issuance(db, issuance):
    refused(db, issuance, PolicyViolation, "policy_violation", profile="sub-ca")


def test_validity_beyond_profile(db, issuance):
    refused(db, issuance, PolicyViolation, "policy_violation", validity_days=1827)


def test_retired_ca_issues_nothing(db, issuance):
    with db.transaction() as s:
        s.execute(select(CertificateAuthority).where(CertificateAuthority.name == "issuing")
                  ).scalar_one().status = "retired"
    refused(db, issuance, PolicyViolation, "policy_violation")


def test_reuse_of_a_ca_key(db, issuance, key_store):
    """A CSR made with the issuing CA's own key (signed in the HSM) is refused."""
    with db.transaction() as s:
        ca = s.execute(select(CertificateAuthority).where(
            CertificateAuthority.name == "issuing")).scalar_one()
    hsm_key = key_store.load(bytes.fromhex(ca.key_id), ca.key_label)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
           .sign(hsm_key, hashes.SHA256()))
    assert csr.is_signature_valid
    from cryptography.hazmat.primitives import serialization
    err = refused(db, issuance, PolicyViolation, "ca_key_reuse",
                  csr=csr.public_bytes(serialization.Encoding.PEM))
    assert "CA key" in err.message


def test_duplicate_key_of_another_subscriber(db, issuance):
    key = factories.key("p256")
    issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                subscriber_id=subscriber_id(db, "staff.hanoi.1"),
                                csr=factories.csr(key)))
    refused(db, issuance, PolicyViolation, "duplicate_key", csr=factories.csr(key),
            subscriber_id=subscriber_id(db, "staff.hanoi.2"))
    # The same holder may certify the same key again (renewal).
    row = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                      subscriber_id=subscriber_id(db, "staff.hanoi.1"),
                                      csr=factories.csr(key)))
    assert row.state == "issued"


def test_duplicate_key_allowed_when_profile_allows(db, services):
    import dataclasses
    services.profiles = {**services.profiles, "personal": dataclasses.replace(
        services.profiles["personal"], allow_duplicate_key=True)}
    issuance = services.issuance()
    key = factories.key("p256")
    for user in ("staff.hanoi.1", "staff.hanoi.2"):
        row = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                          subscriber_id=subscriber_id(db, user),
                                          csr=factories.csr(key)))
        assert row.state == "issued"


def test_expiry_never_beyond_issuer(db, issuance, clock):
    with db.transaction() as s:
        ca = s.execute(select(CertificateAuthority).where(
            CertificateAuthority.name == "issuing")).scalar_one()
        ca_not_after = ca.not_after
    clock.set(ca_not_after - dt.timedelta(days=30))
    row = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                      subscriber_id=subscriber_id(db), csr=factories.csr()))
    cert = x509.load_der_x509_certificate(row.der)
    assert cert.not_valid_after_utc == ca_not_after


def test_oversized_limit_is_64_kib():
    assert MAX_CSR_BYTES == 65536
