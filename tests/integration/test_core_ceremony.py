"""Key ceremonies: CA certificates that independent tools accept, idempotence, --force, and
every signature variant (RSA PKCS#1 v1.5, RSA-PSS, ECDSA P-256/P-384) issuing real certificates."""
from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from ca.ceremony import CAParameters
from ca.errors import InvalidInput, NotFound, PolicyViolation
from ca.issuance.service import IssueRequest
from ca.keys import KeySpec
from ca.names import SubjectData
from ca.store.models import AuditEvent, CertificateAuthority, Subscriber
from tests import factories
from tests.hsm.test_hsm_keys import token_private_key_count
from tests.integration.test_core_cli import cli_env, run_cli
from tests.tools import openssl, openssl_verify, pem, pkilint


@pytest.fixture
def token_private_keys(hsm_config):
    """Counts the token's private keys with the independent pkcs11-tool."""
    return lambda: token_private_key_count(hsm_config)


def snapshot(db) -> tuple:
    with db.transaction() as s:
        cas = sorted((c.name, c.status, c.key_id) for c in
                     s.execute(select(CertificateAuthority)).scalars())
        events = s.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    return cas, events


def ca_der(db, name: str) -> bytes:
    with db.transaction() as s:
        return s.execute(select(CertificateAuthority.certificate_der).where(
            CertificateAuthority.name == name)).scalar_one()


def params(name: str, key: str = "rsa2048", **kw) -> CAParameters:
    return CAParameters(name=name, key_spec=KeySpec.parse(key), validity_days=kw.pop("days", 3653),
                        subject=SubjectData(common_name=f"GovCA Test {name}",
                                            organization="Ban Cơ yếu Chính phủ"), **kw)


def lint_ok(tmp_path, der: bytes, name: str) -> None:
    path = tmp_path / f"{name}.der"
    path.write_bytes(der)
    result = pkilint("cert", path)
    assert result.returncode == 0, (name, result.stdout)


# --- the demo hierarchy --------------------------------------------------------------------
def test_issuing_ca_certificate_profile(db, tmp_path):
    root = x509.load_der_x509_certificate(ca_der(db, "root"))
    issuing = x509.load_der_x509_certificate(ca_der(db, "issuing"))
    ext = issuing.extensions
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(issuing.public_key())
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    nc = ext.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    permitted = nc.value.permitted_subtrees[0].value
    assert permitted.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "VN"
    assert issuing.issuer == root.subject
    # The root: self-signed, CA without a path length, KU critical.
    rbc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert rbc.critical and rbc.value.ca and rbc.value.path_length is None
    assert root.issuer == root.subject
    # Independent tools: openssl verifies the chain, pkilint finds nothing on either.
    result = openssl_verify(tmp_path, pem(issuing), pem(root))
    assert result.returncode == 0, result.stderr
    lint_ok(tmp_path, ca_der(db, "root"), "root")
    lint_ok(tmp_path, ca_der(db, "issuing"), "issuing")


# --- idempotence and --force -----------------------------------------------------------------
def test_second_ceremony_changes_nothing(db, services, token_private_keys):
    before, keys_before = snapshot(db), token_private_keys()
    cer = services.ceremony()
    root = cer.init_root(params("root", "rsa3072"))
    issuing = cer.init_issuing(params("issuing"), "root", services.profiles["sub-ca"])
    assert not root.created and not issuing.created
    assert root.ca.name == "root" and issuing.ca.name == "issuing"
    assert snapshot(db) == before
    assert token_private_keys() == keys_before


def test_cli_ceremony_is_idempotent(db, hsm_config, token_private_keys, tmp_path):
    env = cli_env(tmp_path, hsm_config)
    before, keys_before = snapshot(db), token_private_keys()
    for cmd in ("init-root", "init-issuing"):
        result = run_cli(env, "ca", cmd)
        assert result.returncode == 0, result.stderr
        assert b"exists (unchanged; use --force to replace)" in result.stdout
    assert snapshot(db) == before
    assert token_private_keys() == keys_before


def test_force_retires_the_old_ca(db, services, token_private_keys, tmp_path):
    keys_before = token_private_keys()
    with db.transaction() as s:
        old = s.execute(select(CertificateAuthority).where(
            CertificateAuthority.name == "issuing")).scalar_one()
    result = services.ceremony().init_issuing(params("issuing"), "root",
                                              services.profiles["sub-ca"], force=True)
    assert result.created and result.ca.key_id != old.key_id
    assert token_private_keys() == keys_before + 1
    with db.transaction() as s:
        retired = s.get(CertificateAuthority, old.id)
        assert retired.status == "retired" and retired.name.startswith("issuing-retired-")
        actions = [e.action for e in s.execute(select(AuditEvent).order_by(
            AuditEvent.seq.desc()).limit(2)).scalars()]
        assert actions == ["ca.init", "ca.retire"]
        sub = s.execute(select(Subscriber.id).where(Subscriber.username == "staff.hanoi.1")
                        ).scalar_one()
    issuance = services.issuance()
    row = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                      subscriber_id=sub, csr=factories.csr()))
    new_cert = x509.load_der_x509_certificate(result.ca.certificate_der)
    leaf = x509.load_der_x509_certificate(row.der)
    assert leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value \
        .key_identifier == new_cert.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier).value.digest
    verify = openssl_verify(tmp_path, pem(row.der), pem(ca_der(db, "root")), pem(new_cert))
    assert verify.returncode == 0, verify.stderr
    with pytest.raises(PolicyViolation, match="retired"):
        issuance.issue(IssueRequest(ca=retired.name, profile="personal", actor="test",
                                    subscriber_id=sub, csr=factories.csr()))


def test_cli_force_root(db, hsm_config, tmp_path):
    env = cli_env(tmp_path, hsm_config)
    result = run_cli(env, "ca", "init-root", "--key", "p256", "--force")
    assert result.returncode == 0, result.stderr
    assert b"CA root created" in result.stdout and b"EC secp256r1" in result.stdout
    with db.transaction() as s:
        statuses = dict(s.execute(select(CertificateAuthority.name,
                                             CertificateAuthority.status)).all())
    assert statuses["root"] == "active"
    assert [n for n, st in statuses.items() if st == "retired" and n.startswith("root-retired-")]


def test_failed_ceremony_leaves_no_key(db, services, token_private_keys):
    before, keys_before = snapshot(db), token_private_keys()
    cer = services.ceremony()
    with pytest.raises(NotFound, match="init-root"):
        cer.init_issuing(params("other"), "no-such-parent", services.profiles["sub-ca"])
    bad = CAParameters(name="bad", key_spec=KeySpec("rsa", "2048"),
                       subject=SubjectData(common_name="Bad\x00CA"))
    with pytest.raises(InvalidInput):
        cer.init_root(bad)
    with pytest.raises(PolicyViolation):
        cer.init_root(params("too-long", days=7306))
    with pytest.raises(PolicyViolation, match="at least one day"):
        cer.init_root(params("too-short", days=0))
    with pytest.raises(PolicyViolation, match="retired"):
        with db.transaction() as s:
            s.execute(select(CertificateAuthority).where(
                CertificateAuthority.name == "root")).scalar_one().status = "retired"
        cer.init_issuing(params("child"), "root", services.profiles["sub-ca"])
    cas, _events = snapshot(db)
    assert cas == [(n, "retired" if n == "root" else st, k) for n, st, k in before[0]]
    assert token_private_keys() == keys_before


def test_expired_parent_is_refused_before_key_generation(db, services, token_private_keys,
                                                         clock):
    import datetime as dt
    keys_before = token_private_keys()
    with db.transaction() as s:
        root_not_after = s.execute(select(CertificateAuthority.not_after).where(
            CertificateAuthority.name == "root")).scalar_one()
    clock.set(root_not_after + dt.timedelta(days=1))
    with pytest.raises(PolicyViolation, match="expired"):
        services.ceremony().init_issuing(params("late"), "root", services.profiles["sub-ca"])
    assert token_private_keys() == keys_before


# --- the signature variants ------------------------------------------------------------------
VARIANTS = {
    "rsa-pkcs1v15-sha384": dict(key="rsa2048", scheme="pkcs1v15", hash_algorithm="sha384"),
    "rsa-pss-sha256": dict(key="rsa2048", scheme="pss", hash_algorithm="sha256"),
    "ecdsa-p256": dict(key="p256", hash_algorithm="sha256"),
    "ecdsa-p384": dict(key="p384", hash_algorithm="sha384"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_ca_variant_issues_verifiable_lint_clean_certificates(variant, db, services, tmp_path):
    v = dict(VARIANTS[variant])
    key = v.pop("key")
    cer = services.ceremony()
    root = cer.init_root(params(f"r-{variant}", key, **v))
    issuing = cer.init_issuing(params(f"i-{variant}", key, **v), f"r-{variant}",
                               services.profiles["sub-ca"])
    assert root.created and issuing.created
    assert issuing.ca.signature_scheme == ("ecdsa" if key.startswith("p") else v["scheme"])
    with db.transaction() as s:
        sub = s.execute(select(Subscriber.id).where(Subscriber.username == "staff.quangninh.1")
                        ).scalar_one()
    row = services.issuance().issue(IssueRequest(
        ca=f"i-{variant}", profile="personal", actor="test", subscriber_id=sub,
        csr=factories.csr(factories.key("p384"))))
    leaf = x509.load_der_x509_certificate(row.der)
    expected_hash = v["hash_algorithm"]
    assert leaf.signature_hash_algorithm.name == expected_hash
    text = openssl("x509", "-noout", "-text", input=pem(row.der)).stdout.decode()
    sig_name = {"rsa-pkcs1v15-sha384": "sha384WithRSAEncryption",
                "rsa-pss-sha256": "rsassaPss", "ecdsa-p256": "ecdsa-with-SHA256",
                "ecdsa-p384": "ecdsa-with-SHA384"}[variant]
    assert f"Signature Algorithm: {sig_name}" in text
    verify = openssl_verify(tmp_path, pem(row.der), pem(root.ca.certificate_der),
                            pem(issuing.ca.certificate_der))
    assert verify.returncode == 0, verify.stderr
    for name, der in (("root", root.ca.certificate_der), ("issuing", issuing.ca.certificate_der),
                      ("leaf", row.der)):
        lint_ok(tmp_path, der, name)
