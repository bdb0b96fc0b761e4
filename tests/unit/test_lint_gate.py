"""The release gate (ca/issuance/lint.py LintGate): pkilint once per certificate shape, cheap
checks per certificate. A certificate that differs from a linted template in a way pkilint flags
must still be refused; each case also asserts that pkilint itself flags it (same verdict)."""
from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from ca.issuance.builder import CertificateContent, IssuerView, build
from ca.issuance.lint import LintGate, lint_certificate
from ca.profiles import builtin_profiles

pytestmark = pytest.mark.filterwarnings("ignore:Attribute's length")
NOW = dt.datetime(2026, 6, 1, 8, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def ca():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ban Cơ yếu Chính phủ"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Test Issuing CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(ski, critical=False).sign(key, hashes.SHA256()))
    return key, IssuerView(name="issuing", certificate=cert, base_url="http://127.0.0.1:8080")


def subject(cn="Nguyễn Văn An", org="Sở Y tế", ou="Văn phòng", org_type=_ASN1Type.UTF8String,
            country="VN"):
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, country, _validate=False),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Hà Nội"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org, _type=org_type),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
        x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False)])


def make(ca, name=None, email="an.nv@hanoi.gov.vn", extra=(), serial=None):
    ca_key, view = ca
    key = ec.generate_private_key(ec.SECP256R1())
    b = build(builtin_profiles()["personal"], view, CertificateContent(
        subject=name or subject(), public_key=key.public_key(),
        serial=serial or x509.random_serial_number() >> 1, not_before=NOW,
        not_after=NOW + dt.timedelta(days=1095), email=email))
    for ext, critical in extra:
        b = b.add_extension(ext, critical=critical)
    return b.sign(ca_key, hashes.SHA256())


def pkilint_ok(cert) -> bool:
    return lint_certificate(cert.public_bytes(serialization.Encoding.DER)).ok


def primed(ca) -> LintGate:
    gate = LintGate()
    first = make(ca)
    assert gate.check(first).ok, gate.check(first).errors
    assert gate.full_lints == 1
    return gate


def test_same_shape_is_checked_without_a_second_pkilint_run(ca):
    gate = primed(ca)
    other = make(ca, subject(cn="Trần Thị Bình", ou="Phòng Tổ chức cán bộ"), email="b@x.gov.vn")
    res = gate.check(other)
    assert res.ok, res.errors
    assert gate.full_lints == 1 and gate.cached_checks == 1


def test_too_long_common_name_is_refused(ca):
    gate = primed(ca)
    bad = make(ca, subject(cn="Nguyễn " + "A" * 60))  # 67 characters > ub-common-name 64
    assert not pkilint_ok(bad)
    res = gate.check(bad)
    assert not res.ok and any("commonName" in e for e in res.errors)


def test_printablestring_where_utf8string_is_required_is_refused(ca):
    gate = primed(ca)
    bad = make(ca, subject(org="So Y te", org_type=_ASN1Type.PrintableString))
    res = gate.check(bad)
    assert not res.ok and any("directory_string_not_utf8string" in e for e in res.errors)


def test_country_name_of_wrong_length_is_refused(ca):
    gate = primed(ca)
    bad = make(ca, subject(country="VNM"))  # PrintableString SIZE(2)
    assert not pkilint_ok(bad)
    res = gate.check(bad)
    assert not res.ok and any("countryName" in e for e in res.errors)


@pytest.mark.parametrize("email", ["not an e-mail", "a@b..gov.vn"])
def test_bad_email_in_san_is_refused_on_the_cached_path(ca, email):
    gate = primed(ca)
    bad = make(ca, email=email)
    assert not pkilint_ok(bad)
    res = gate.check(bad)
    assert not res.ok and any("invalid_email_address_syntax" in e for e in res.errors)
    assert gate.full_lints == 1  # refused by the per-certificate check itself


def test_a_wrong_extension_makes_a_new_shape_that_pkilint_refuses(ca):
    gate = primed(ca)
    bad = make(ca, extra=[(x509.IssuerAlternativeName(
        [x509.UniformResourceIdentifier("not a uri")]), False)])
    assert not pkilint_ok(bad)
    res = gate.check(bad)
    assert not res.ok and gate.full_lints == 2
    assert any("uri" in e.lower() for e in res.errors)


def test_failed_shapes_are_not_cached(ca):
    gate = LintGate()
    bad = make(ca, extra=[(x509.IssuerAlternativeName(
        [x509.UniformResourceIdentifier("not a uri")]), False)])
    assert not gate.check(bad).ok and not gate.check(bad).ok
    assert gate.full_lints == 2 and gate.cached_checks == 0
