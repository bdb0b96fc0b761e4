"""CSR parsing and key policy without a database: each bad input has its own code and sentence."""
from __future__ import annotations

import pytest

from ca.csr import MAX_CSR_BYTES, parse_csr
from ca.errors import BadCSR, InvalidInput, PolicyViolation
from ca.keys import check_public_key, describe
from tests import factories
from tests.unit import samples

ALLOWED = {"rsa": ("2048", "3072", "4096"), "ec": ("secp256r1", "secp384r1")}


def _one_sentence(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message
    assert message.count(". ") == 0, message


@pytest.mark.parametrize("encoding", ["pem", "der"])
def test_good_csr_in_pem_and_der(encoding):
    parsed = parse_csr(factories.csr(factories.key("p256"), encoding=encoding))
    assert str(parsed.key_spec) == "EC P-256"
    assert len(parsed.spki_sha256) == 64


@pytest.mark.parametrize("data,code", [
    (b"-----BEGIN CERTIFICATE REQUEST-----\nnot*base64\n-----END CERTIFICATE REQUEST-----\n",
     "csr_malformed"),
    (b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n", "csr_malformed"),
    (b"\x30\x82\x01\x00garbage", "csr_malformed"),
    (b"\x01\x02\x03\x04", "csr_malformed"),
    (b"   \n", "csr_empty"),
])
def test_malformed_input(data, code):
    with pytest.raises(BadCSR) as exc:
        parse_csr(data)
    assert exc.value.code == code
    _one_sentence(exc.value.message)


def test_two_pem_blocks_are_refused():
    pem = factories.csr(factories.key("p256"))
    with pytest.raises(BadCSR, match="exactly one"):
        parse_csr(pem + pem)


def test_trailing_bytes_are_refused():
    der = factories.csr(factories.key("p256"), encoding="der")
    with pytest.raises(BadCSR) as exc:
        parse_csr(der + b"\x00")
    assert exc.value.code == "csr_malformed"


def test_ber_not_der():
    der = factories.csr(factories.key("p256"), encoding="der")
    assert parse_csr(der)  # the same CSR in DER passes
    with pytest.raises(BadCSR) as exc:
        parse_csr(samples.ber_not_der(der))
    assert exc.value.code == "csr_not_der"
    _one_sentence(exc.value.message)


def test_broken_signature():
    der = factories.csr(factories.key("rsa2048"), encoding="der")
    with pytest.raises(BadCSR) as exc:
        parse_csr(samples.broken_signature(der))
    assert exc.value.code == "csr_bad_signature"


def test_sha1_signature():
    with pytest.raises(BadCSR) as exc:
        parse_csr(samples.sha1_csr())
    assert exc.value.code == "csr_weak_hash"
    assert "SHA1" in exc.value.message


@pytest.mark.parametrize("which", ["basic_constraints", "key_usage"])
def test_ca_rights(which):
    with pytest.raises(PolicyViolation) as exc:
        parse_csr(samples.ca_rights_csrs()[which])
    assert exc.value.code == "csr_requests_ca"


def test_oversized():
    data = samples.oversized_csr()
    assert len(data) > MAX_CSR_BYTES
    with pytest.raises(BadCSR) as exc:
        parse_csr(data)
    assert exc.value.code == "csr_too_large"


@pytest.mark.parametrize("cn", ["abc\x07def", "Nguyễn\x00Văn", "Trần\u202eVăn"])
def test_control_characters_in_subject(cn):
    with pytest.raises(InvalidInput) as exc:
        parse_csr(factories.csr(factories.key("p256"), cn=cn))
    assert exc.value.code == "control_character"


@pytest.mark.parametrize("kind,code,text", [
    ("rsa1024", "key_size", "1024 bits is too small"),
    ("rsa-e3", "key_exponent", "exponent 3"),
    ("dsa2048", "key_type", "DSA keys are not accepted"),
    ("p521", "key_curve", "secp521r1"),
    ("k256", "key_curve", "secp256k1"),
])
def test_key_policy(kind, code, text):
    parsed = parse_csr(factories.csr(factories.key(kind)))
    with pytest.raises(PolicyViolation) as exc:
        check_public_key(parsed.public_key, ALLOWED)
    assert exc.value.code == code
    assert text in exc.value.message
    _one_sentence(exc.value.message)


@pytest.mark.parametrize("kind,spec", [("rsa2048", "RSA-2048"), ("rsa3072", "RSA-3072"),
                                       ("p256", "EC P-256"), ("p384", "EC P-384"),
                                       ("dsa2048", "DSA-2048")])
def test_key_descriptions(kind, spec):
    assert str(describe(factories.key(kind, fresh=False).public_key())) == spec


def test_profile_may_narrow_sizes():
    parsed = parse_csr(factories.csr(factories.key("rsa2048", fresh=False)))
    with pytest.raises(PolicyViolation) as exc:
        check_public_key(parsed.public_key, {"rsa": ("3072",)})
    assert exc.value.code == "key_size"


@pytest.mark.parametrize("bad", [b"\x0c\x03\xff\xfe\xfd", b"\x13\x03a\x00c", b"\x1e\x03abc"],
                         ids=["utf8-invalid", "printable-nul", "bmp-odd-length"])
def test_badly_encoded_subject_strings(bad):
    with pytest.raises(BadCSR) as exc:
        parse_csr(samples.resigned_with_subject_bytes(b"\x0c\x03abc", bad))
    assert exc.value.code == "csr_malformed"


def test_csr_with_a_long_vietnamese_cn_is_read():
    """Other tools do put 64-character (> 64-byte) names in CSRs; reading them must not fail."""
    import warnings

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    from tests.unit.test_names import LONG_NAME
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LONG_NAME, _validate=False)])
        req = x509.CertificateSigningRequestBuilder().subject_name(name).sign(
            factories.key("p256"), hashes.SHA256())
        from cryptography.hazmat.primitives import serialization
        parsed = parse_csr(req.public_bytes(serialization.Encoding.DER))
        assert parsed.csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value \
            == LONG_NAME
