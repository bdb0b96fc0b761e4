"""A 64-character Vietnamese name through issuance: byte-exact, UTF8String, NFC, lint-clean."""
from __future__ import annotations

import unicodedata

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from ca.errors import InvalidInput
from ca.issuance.lint import lint_certificate
from ca.issuance.service import IssueRequest
from ca.registry import add_subscriber
from ca.store.models import CertificateAuthority, Organization, RaDomain
from tests import factories
from tests.tools import openssl_verify, pem, pkilint
from tests.unit.test_names import LONG_NAME


def _register(db, clock, name: str, id_number: str) -> int:
    with db.transaction() as s:
        dom = s.execute(select(RaDomain).where(RaDomain.code == "quangninh")).scalar_one()
        unit = s.execute(select(Organization).where(Organization.domain_id == dom.id,
                                                    Organization.kind == "unit")
                         .order_by(Organization.id)).scalars().first()
        return add_subscriber(s, organization_id=unit.id, full_name=name, id_number=id_number,
                              email="ho.ton@quangninh.gov.vn", at=clock.now(), actor="test").id


def _utf8_string_tlv(text: str) -> bytes:
    body = text.encode("utf-8")
    assert len(body) < 128
    return bytes([0x0C, len(body)]) + body  # UTF8String, short-form length


@pytest.mark.filterwarnings("ignore:Attribute.s length must be:UserWarning")
def test_64_character_vietnamese_cn_issued_byte_exact(db, issuance, clock, tmp_path):
    decomposed = unicodedata.normalize("NFD", LONG_NAME)
    assert decomposed != LONG_NAME
    sub_id = _register(db, clock, decomposed, "022190000001")
    row = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                      subscriber_id=sub_id, csr=factories.csr()))
    cert = x509.load_der_x509_certificate(row.der)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0]
    assert cn.value == LONG_NAME and len(cn.value) == 64
    assert cn._type == x509.name._ASN1Type.UTF8String
    # Byte-exact in the DER: the NFC UTF-8 octets inside a UTF8String TLV, no NFD anywhere.
    assert _utf8_string_tlv(LONG_NAME) in row.der
    assert decomposed.encode("utf-8") not in row.der
    loc = cert.subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)[0]
    assert loc.value == "Quảng Ninh" and _utf8_string_tlv("Quảng Ninh") in row.der
    # pkilint, in-process and as the independent command-line tool.
    assert lint_certificate(row.der).ok
    (tmp_path / "leaf.der").write_bytes(row.der)
    result = pkilint("cert", tmp_path / "leaf.der")
    assert result.returncode == 0, result.stdout
    with db.transaction() as s:
        cas = {c.name: c.certificate_der for c in s.execute(select(CertificateAuthority)).scalars()}
    verify = openssl_verify(tmp_path, pem(row.der), pem(cas["root"]), pem(cas["issuing"]))
    assert verify.returncode == 0, verify.stderr


def test_65_character_name_refused_at_registration(db, clock):
    with pytest.raises(InvalidInput) as exc:
        _register(db, clock, LONG_NAME + "a", "022190000002")
    assert exc.value.code == "too_long"
