"""Prepared TBS templates (ca/issuance/template.py): a certificate assembled from the template of
its shape is byte for byte the TBS cryptography's builder makes, for the values that vary
(serial, validity either side of 2050, Vietnamese subjects long enough for long-form DER
lengths, RSA and EC keys, with and without an e-mail SAN); a template that disagrees with the
builder is dropped and the builder is used."""
from __future__ import annotations

import datetime as dt
import random
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ca.issuance.builder import CertificateContent, IssuerView, build
from ca.issuance.signing import lint_key, sign_options
from ca.issuance.template import Templates, TbsTemplate
from ca.keys import KeySpec
from ca.names import SubjectData, build_name
from ca.profiles import builtin_profiles

UTC = dt.timezone.utc
NAMES = ["Nguyễn Thị Ánh Tuyết", "Trần Văn A", "Lê Thị Phương Thảo Nguyễn Hoàng Bảo Ngọc Châu",
         "Phạm Đức Minh"]
UNITS = [(), ("Phòng Hành chính",), ("Văn phòng Ủy ban nhân dân tỉnh Thành phố Hồ Chí Minh",
                                      "Phòng Quản trị hệ thống thông tin và chuyển đổi số")]


def _issuer(ca_key) -> IssuerView:
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ban Cơ yếu Chính phủ"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Test Issuing CA")])
    now = dt.datetime(2026, 1, 1, tzinfo=UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=36500))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return IssuerView(name="issuing", certificate=cert, base_url="http://127.0.0.1:8080")


def _prep(profile, issuer, ca_spec, opts, *, name, units, key, serial, now, not_after, email):
    return SimpleNamespace(
        profile=profile, issuer=issuer, ca_spec=ca_spec, opts=opts,
        name=build_name(SubjectData(common_name=name, locality="Thành phố Hà Nội",
                                    organization="Sở Nội vụ", organizational_units=units)),
        public_key=key.public_key(), serial=serial, now=now, not_after=not_after, email=email,
        dns=())


def _builder_tbs(prep) -> bytes:
    b = build(prep.profile, prep.issuer, CertificateContent(
        subject=prep.name, public_key=prep.public_key, serial=prep.serial,
        not_before=prep.now, not_after=prep.not_after, email=prep.email, dns_names=prep.dns))
    return b.sign(lint_key(prep.ca_spec), **prep.opts).tbs_certificate_bytes


@pytest.mark.parametrize("ca_kind", ["rsa", "ec"])
def test_assembled_tbs_is_the_builders(ca_kind):
    rng = random.Random(7)
    profile = builtin_profiles()["personal"]
    if ca_kind == "rsa":
        ca_key, ca_spec = rsa.generate_private_key(65537, 2048), KeySpec("rsa", "2048")
        opts = sign_options(ca_spec, "pkcs1v15", "sha256")
    else:
        ca_key, ca_spec = ec.generate_private_key(ec.SECP256R1()), KeySpec("ec", "secp256r1")
        opts = sign_options(ca_spec, "ecdsa", "sha256")
    issuer = _issuer(ca_key)
    sub_keys = [ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048)]
    templates: dict[tuple, TbsTemplate] = {}
    checked = 0
    for n in range(80):
        key = sub_keys[n % 2]
        now = dt.datetime(2026, 11, 23, 8, 30, 5, tzinfo=UTC) + dt.timedelta(
            seconds=rng.randrange(10**7))
        far = rng.choice([dt.timedelta(days=1095), dt.timedelta(days=365 * 30)])  # 2050+
        serial = rng.choice([rng.getrandbits(159) | (1 << 158), rng.getrandbits(152),
                             rng.getrandbits(64) | (1 << 63), 0x80, 0x7F])
        prep = _prep(profile, issuer, ca_spec, opts, name=rng.choice(NAMES),
                     units=rng.choice(UNITS), key=key, serial=serial, now=now,
                     not_after=now + far, email=rng.choice([None, f"user{n}@hanoi.gov.vn"]))
        store = Templates()
        shape = store.shape(prep)
        assert shape is not None
        expected = _builder_tbs(prep)
        tpl = templates.get(shape)
        if tpl is None:
            templates[shape] = TbsTemplate(prep, expected, b"")  # raises if it disagrees
            continue
        assert tpl.assemble(prep) == expected
        checked += 1
    assert checked > 40 and len(templates) >= 4  # several shapes, most certificates assembled


def test_a_template_that_disagrees_with_the_builder_is_dropped():
    profile = builtin_profiles()["personal"]
    ca_key, ca_spec = ec.generate_private_key(ec.SECP256R1()), KeySpec("ec", "secp256r1")
    opts = sign_options(ca_spec, "ecdsa", "sha256")
    issuer = _issuer(ca_key)
    now = dt.datetime(2026, 11, 23, tzinfo=UTC)

    def prep(serial):
        return _prep(profile, issuer, ca_spec, opts, name="Trần Văn A", units=(),
                     key=ec.generate_private_key(ec.SECP256R1()), serial=serial, now=now,
                     not_after=now + dt.timedelta(days=365), email="a@hanoi.gov.vn")

    store = Templates()
    first = prep(12345678901234567890)
    shape = store.shape(first)
    store.learn(shape, first, _builder_tbs(first), b"sigalg")
    tpl = store.get(shape)
    assert tpl is not None and tpl.checks_left > 0
    second = prep(98765432109876543210)
    assert store.assemble(shape, tpl, second, lambda: _builder_tbs(second)) == \
        _builder_tbs(second)  # agrees while it is checked
    tpl.extensions[0] = tpl.extensions[0][:-1] + bytes([tpl.extensions[0][-1] ^ 1])  # corrupt
    third = prep(55555555555555555555)
    assert store.assemble(shape, tpl, third, lambda: _builder_tbs(third)) is None
    assert store.get(shape) is None  # dropped for good: the builder makes the rest
    store.learn(shape, third, _builder_tbs(third), b"sigalg")
    assert store.get(shape) is None


def test_fractional_seconds_have_no_template():
    profile = builtin_profiles()["personal"]
    ca_key, ca_spec = ec.generate_private_key(ec.SECP256R1()), KeySpec("ec", "secp256r1")
    prep = _prep(profile, _issuer(ca_key), ca_spec, sign_options(ca_spec, "ecdsa", "sha256"),
                 name="Phạm Đức Minh", units=(), key=ec.generate_private_key(ec.SECP256R1()),
                 serial=99, now=dt.datetime(2026, 11, 23, tzinfo=UTC),
                 not_after=dt.datetime(2027, 11, 23, 0, 0, 0, 500, tzinfo=UTC), email=None)
    store = Templates()
    shape = store.shape(prep)
    store.learn(shape, prep, _builder_tbs(prep), b"")
    assert store.get(shape) is None
