"""Done-when of issue 3: three independent relying parties -- `openssl ocsp` (-VAfile with the
delegated responder), `openssl verify -crl_check_all` on downloaded CRLs, and
pyhanko-certvalidator in hard-fail mode -- agree on a good and a revoked certificate, fetching
over HTTP from a running gunicorn server whose in-process scheduler (one leader for two workers)
issued the responders and published the CRLs."""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from sqlalchemy import func, select

from ca import revocation
from ca.ceremony import CAParameters, Ceremony
from ca.clock import SystemClock
from ca.keys import KeySpec
from ca.names import SubjectData
from ca.store.models import CertificateAuthority
from ca.store.models_crl import OcspResponder, PublishedCRL, SchedulerLease
from tests.conftest import database_url
from tests.crl.helpers import issue, ocsp_request
from tests.crl.server import Server, free_port, http
from tests.tools import openssl, pem


@pytest.fixture
def rp_world(db, settings, profiles, key_store, hsm_config, tmp_path):
    """A CA hierarchy whose URLs point at the test server, certificates valid now, one revoked
    before the server starts; then the server."""
    from ra_portal.wiring import Services
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    clock = SystemClock()
    svc = Services(settings=dataclasses.replace(settings, base_url=base), db=db, clock=clock,
                   profiles=profiles, _keys=key_store)
    cer = Ceremony(db, key_store, clock, base, actor="test")
    org = "Ban Cơ yếu Chính phủ"
    cer.init_root(CAParameters(name="rp-root", key_spec=KeySpec("ec", "secp256r1"),
                               validity_days=3650,
                               subject=SubjectData(common_name="GovCA RP Root", organization=org)))
    cer.init_issuing(CAParameters(name="rp-issuing", key_spec=KeySpec("rsa", "2048"),
                                  validity_days=1825, subject=SubjectData(
                                      common_name="GovCA RP Issuing", organization=org)),
                     parent="rp-root", profile=profiles["sub-ca"])
    good = issue(svc, "staff.hanoi.1", ca="rp-issuing")
    bad = issue(svc, "staff.hanoi.2", ca="rp-issuing")
    late = issue(svc, "staff.hanoi.3", ca="rp-issuing")
    revocation.revoke(db, clock, serial=bad.serial, reason="keyCompromise", actor="test")
    (tmp_path / "profiles.json").write_text("{}")
    server = Server(port=port, database_url=database_url(tmp_path), hsm_config=hsm_config,
                    instance=tmp_path, workers=2, scheduler_interval=1.0)
    try:
        server.wait_ready()
        yield {"svc": svc, "server": server, "good": good, "bad": bad, "late": late,
               "tmp": tmp_path}
    finally:
        server.stop()


def _cas(db):
    with db.transaction() as s:
        return {c.name: x509.load_der_x509_certificate(c.certificate_der)
                for c in s.execute(select(CertificateAuthority)).scalars()}


@pytest.mark.timeout(120)
def test_three_relying_parties_agree(rp_world):
    w, server, tmp = rp_world, rp_world["server"], rp_world["tmp"]
    db = w["svc"].db
    # The scheduler (in a worker) publishes the CRLs and issues the responders.
    root_crl = server.wait_for("/pki/crl/rp-root.crl")
    issuing_crl = server.wait_for("/pki/crl/rp-issuing.crl")
    delta_crl = server.wait_for("/pki/crl/rp-issuing-delta.crl")
    cas = _cas(db)
    root, issuing = cas["rp-root"], cas["rp-issuing"]
    deadline = time.monotonic() + 30
    while True:
        with db.transaction() as s:
            responder = s.execute(select(OcspResponder.certificate_der).join(
                CertificateAuthority, CertificateAuthority.id == OcspResponder.ca_id).where(
                CertificateAuthority.name == "rp-issuing")).scalars().first()
        if responder or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert responder, server.log.read_text()[-3000:]
    files = {"root.pem": pem(root), "issuing.pem": pem(issuing),
             "responder.pem": pem(responder), "good.pem": pem(w["good"].der),
             "bad.pem": pem(w["bad"].der),
             "root.crl": root_crl, "issuing.crl": issuing_crl, "delta.crl": delta_crl}
    for name, data in files.items():
        (tmp / name).write_bytes(data)

    # 1. openssl ocsp, with nonce (signed now) and without (pre-signed), -VAfile responder.
    for leaf, expected in (("good.pem", "good"), ("bad.pem", "revoked")):
        for nonce in ([], ["-no_nonce"]):
            r = openssl("ocsp", "-issuer", str(tmp / "issuing.pem"), "-cert", str(tmp / leaf),
                        "-url", f"{server.base}/ocsp", "-VAfile", str(tmp / "responder.pem"),
                        "-CAfile", str(tmp / "root.pem"), *nonce)
            out = r.stdout.decode() + r.stderr.decode()
            assert r.returncode == 0, out
            assert "Response verify OK" in out, out
            assert f"{tmp / leaf}: {expected}" in out, out
            if expected == "revoked":
                assert "Reason: keyCompromise" in out, out

    # 2. openssl verify -crl_check_all on the CRLs downloaded over HTTP (with the delta too).
    for pems in (("root.crl", "issuing.crl"), ("root.crl", "issuing.crl", "delta.crl")):
        crl_args = []
        for p in pems:
            der_path = tmp / p
            pem_path = tmp / (p + ".pem")
            pem_path.write_bytes(x509.load_der_x509_crl(der_path.read_bytes()).public_bytes(
                serialization.Encoding.PEM))
            crl_args += ["-CRLfile", str(pem_path)]
        extra = ["-use_deltas"] if len(pems) == 3 else []
        base_args = ["verify", "-crl_check_all", *extra, "-CAfile", str(tmp / "root.pem"),
                     "-untrusted", str(tmp / "issuing.pem"), *crl_args]
        ok = openssl(*base_args, str(tmp / "good.pem"))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        revoked = openssl(*base_args, str(tmp / "bad.pem"))
        assert revoked.returncode != 0
        assert b"certificate revoked" in revoked.stdout + revoked.stderr

    # 3. pyhanko-certvalidator, hard-fail, fetching OCSP/CRLs itself from the URLs in the certs.
    from asn1crypto import x509 as a509
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import RevokedError
    from pyhanko_certvalidator.fetchers.requests_fetchers import RequestsFetcherBackend

    def validate(leaf_der: bytes):
        ctx = ValidationContext(trust_roots=[a509.Certificate.load(root.public_bytes(
            serialization.Encoding.DER))], other_certs=[a509.Certificate.load(
                issuing.public_bytes(serialization.Encoding.DER))], allow_fetching=True,
            revocation_mode="hard-fail", fetcher_backend=RequestsFetcherBackend())
        validator = CertificateValidator(a509.Certificate.load(leaf_der), validation_context=ctx)
        return asyncio.run(validator.async_validate_usage(set()))

    path = validate(w["good"].der)
    assert len(path) == 3
    with pytest.raises(RevokedError):
        validate(w["bad"].der)

    # Freshness: a revocation made now shows in OCSP within seconds.
    body = ocsp_request(w["late"].der, issuing)
    url = f"{server.base}/ocsp/" + base64.b64encode(body).decode()
    status, _, data = http(url)
    assert ocsp.load_der_ocsp_response(data).certificate_status == ocsp.OCSPCertStatus.GOOD
    revocation.revoke(db, SystemClock(), serial=w["late"].serial, reason="privilegeWithdrawn",
                      actor="test")
    t0 = time.monotonic()
    while True:
        status, _, data = http(url)
        if ocsp.load_der_ocsp_response(data).certificate_status == ocsp.OCSPCertStatus.REVOKED:
            break
        assert time.monotonic() - t0 < 10, "revocation not visible in OCSP within 10 s"
        time.sleep(0.2)

    # One leader for two workers: one full CRL per CA in this run, one lease row.
    with db.transaction() as s:
        fulls = s.execute(select(func.count(PublishedCRL.id)).join(
            CertificateAuthority, CertificateAuthority.id == PublishedCRL.ca_id).where(
            CertificateAuthority.name == "rp-issuing", PublishedCRL.kind == "full")).scalar_one()
        leases = s.execute(select(func.count()).select_from(SchedulerLease)).scalar_one()
        responders = s.execute(select(func.count(OcspResponder.id)).join(
            CertificateAuthority, CertificateAuthority.id == OcspResponder.ca_id).where(
            CertificateAuthority.name == "rp-issuing")).scalar_one()
    assert fulls == 1 and leases == 1 and responders == 1
