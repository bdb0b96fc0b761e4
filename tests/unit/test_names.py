"""Vietnamese text in names: NFC, no control characters, RFC 5280 bounds counted in characters."""
from __future__ import annotations

import unicodedata

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from ca.errors import InvalidInput
from ca.names import SubjectData, build_name, clean_dns_name, clean_email, clean_text, fold

# 64 characters, 91 UTF-8 octets: fits RFC 5280's ub-common-name, not a 64-byte check.
LONG_NAME = "Tôn Nữ Hoàng Thị Phượng Nguyễn Trần Lê Phạm Huỳnh Đặng Bùi Đỗ Hồ"


def test_long_name_is_64_characters_and_more_than_64_bytes():
    assert len(LONG_NAME) == 64 and not LONG_NAME.endswith(" ")
    assert len(LONG_NAME.encode("utf-8")) > 64


def test_cryptography_counts_bytes_which_is_why_names_py_exists():
    with pytest.raises(ValueError):
        x509.NameAttribute(NameOID.COMMON_NAME, LONG_NAME)


def test_build_name_accepts_64_characters_byte_exact():
    name = build_name(SubjectData(common_name=LONG_NAME, locality="Hà Nội", organization="Sở Y tế",
                                  organizational_units=("Văn phòng",)))
    cn = name.get_attributes_for_oid(NameOID.COMMON_NAME)[0]
    assert cn.value == LONG_NAME
    assert cn._type == x509.name._ASN1Type.UTF8String
    assert [a.oid for a in name] == [NameOID.COUNTRY_NAME, NameOID.LOCALITY_NAME,
                                     NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME,
                                     NameOID.COMMON_NAME]
    assert LONG_NAME.encode("utf-8") in name.public_bytes()


def test_65_characters_refused():
    with pytest.raises(InvalidInput) as exc:
        build_name(SubjectData(common_name=LONG_NAME + "a"))
    assert exc.value.code == "too_long"
    assert exc.value.message == "common name is 65 characters long; at most 64 are allowed"


def test_nfd_input_comes_out_nfc():
    nfd = unicodedata.normalize("NFD", "Nguyễn Thị Ánh Tuyết")
    assert nfd != "Nguyễn Thị Ánh Tuyết"
    out = clean_text(nfd, field_name="name", max_chars=64)
    assert out == "Nguyễn Thị Ánh Tuyết" and unicodedata.is_normalized("NFC", out)
    # A 64-character name given decomposed is 64 characters once composed.
    long_nfd = unicodedata.normalize("NFD", LONG_NAME)
    assert len(long_nfd) > 64
    assert clean_text(long_nfd, field_name="name", max_chars=64) == LONG_NAME


@pytest.mark.parametrize("bad,code", [("A\x00B", "U+0000"), ("A\tB\x1f", "U+0009"),
                                      ("A\u200bB", "U+200B"), ("A\u202eB", "U+202E"),
                                      ("A\u2028B", "U+2028"), ("A\x7fB", "U+007F")])
def test_control_and_invisible_characters_refused(bad, code):
    with pytest.raises(InvalidInput) as exc:
        clean_text(bad, field_name="name", max_chars=64)
    assert exc.value.code == "control_character"
    assert code in exc.value.message


def test_whitespace_collapsed_and_required():
    assert clean_text("  Trần   Văn  Đức ", field_name="n", max_chars=64) == "Trần Văn Đức"
    with pytest.raises(InvalidInput) as exc:
        clean_text("   ", field_name="n", max_chars=64)
    assert exc.value.code == "required"


def test_country_must_be_two_letters():
    with pytest.raises(InvalidInput):
        build_name(SubjectData(common_name="x", country="VNM"))


def test_fold_for_search():
    assert fold("Đặng Quốc Bảo") == "dang quoc bao"


def test_email_and_dns_must_be_ascii():
    assert clean_email(" a.b@hanoi.gov.vn ") == "a.b@hanoi.gov.vn"
    assert clean_dns_name("DichVuCong.GOV.vn") == "dichvucong.gov.vn"
    assert clean_dns_name("xn--dchvcng-5ya8b8ez1d.gov.vn").startswith("xn--")
    for bad, code in (("nguyễn@x.vn", "not_ascii"), ("a\x00@x.vn", "control_character"),
                      ("", "required"), ("a" * 251 + "@x.vn", "too_long")):
        with pytest.raises(InvalidInput) as exc:
            clean_email(bad)
        assert exc.value.code == code
    with pytest.raises(InvalidInput) as exc:
        clean_dns_name("bộ.gov.vn")
    assert exc.value.code == "not_ascii" and "A-label" in exc.value.message


def test_name_text_is_the_rfc4514_text_of_the_built_name():
    from ca.names import name_text
    data = SubjectData(common_name="Nguyễn Thị Ánh Tuyết", locality="Hà Nội",
                       organization="Sở Nội vụ", organizational_units=("Phòng Tổ chức",))
    assert name_text(data) == build_name(data).rfc4514_string()
    assert "CN=Nguyễn Thị Ánh Tuyết" in name_text(data)
    assert name_text(data) is name_text(data)  # kept
    unhashable = SubjectData(common_name="Lê Văn A", organizational_units=["Phòng 1"])
    assert name_text(unhashable) == build_name(unhashable).rfc4514_string()
