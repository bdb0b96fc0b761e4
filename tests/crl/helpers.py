"""Helpers of the relying-party tests: certificates to revoke, the CRL and OCSP services, and
OCSP requests built with cryptography (an independent encoder)."""
from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from sqlalchemy import select

from ca.issuance.service import IssueRequest
from ca.store.models import CertificateAuthority, Subscriber
from crl.ocsp import OcspService
from crl.publish import CrlPublisher
from crl.responder import ResponderManager
from tests import factories


def ca_cert(db, name: str) -> x509.Certificate:
    with db.transaction() as s:
        der = s.execute(select(CertificateAuthority.certificate_der).where(
            CertificateAuthority.name == name)).scalar_one()
    return x509.load_der_x509_certificate(der)


def issue(services, username: str = "staff.hanoi.1", ca: str = "issuing"):
    with services.db.transaction() as s:
        sub = s.execute(select(Subscriber).where(Subscriber.username == username)).scalar_one()
    return services.issuance().issue(IssueRequest(
        ca=ca, profile="personal", actor="test", csr=factories.csr(factories.key("p256")),
        subscriber_id=sub.id))


def publisher(services) -> CrlPublisher:
    return CrlPublisher(services.db, services.keys, services.clock, services.settings.base_url)


def responders(services) -> ResponderManager:
    return ResponderManager(services.db, services.keys, services.clock, services.issuance)


def ocsp_service(services, **settings) -> OcspService:
    from crl.ocsp import OcspSettings
    return OcspService(services.db, services.keys, services.clock, OcspSettings(**settings))


def ocsp_request(cert_der: bytes, issuer: x509.Certificate, *, nonce: bytes | None = None,
                 algorithm=None) -> bytes:
    cert = x509.load_der_x509_certificate(cert_der)
    b = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    return b.build().public_bytes(serialization.Encoding.DER)


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.timezone.utc)


def lint(kind: str, path, crl_type: str = "CRL"):
    """pkilint on a CRL (-t CRL|ARL, PKIX profile) or an OCSP response; findings of WARNING or
    worse make the return code non-zero."""
    import subprocess
    from tests.tools import VENV_BIN
    if kind == "crl":
        args = [str(VENV_BIN / "lint_crl"), "lint", "-t", crl_type, "-p", "PKIX", "-s", "WARNING"]
    else:
        args = [str(VENV_BIN / "lint_ocsp_response"), "lint", "-s", "WARNING"]
    return subprocess.run(args + [str(path)], capture_output=True, text=True)
