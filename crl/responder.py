"""Delegated OCSP responders (RFC 6960 4.2.2.2): key generated in the HSM, certificate with
id-kp-OCSPSigning and id-pkix-ocsp-nocheck issued by the CA through the issuance cycle, renewed
before it expires."""
from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from sqlalchemy import select

from ca import audit
from ca.clock import Clock
from ca.errors import NotFound
from ca.issuance.service import IssuanceService, IssueRequest
from ca.keys import KeySpec
from ca.names import SubjectData, build_name
from ca.ports import KeyStore
from ca.store.database import Database
from ca.store.models import CertificateAuthority
from ca.store.models_crl import OcspResponder
from crl import der
from crl.ocsp_codec import ResponseTemplate, key_hash

log = logging.getLogger(__name__)

_ALGORITHMS = {  # AlgorithmIdentifier DER of the responder's signature (SHA-256 always)
    "ec": der.seq(der.oid("1.2.840.10045.4.3.2")),  # ecdsa-with-SHA256, no parameters
    "rsa": der.seq(der.oid("1.2.840.113549.1.1.11"), b"\x05\x00"),  # sha256WithRSAEncryption
}


@dataclass(frozen=True)
class Signer:
    """What signs responses for one CA: the responder's HSM key and certificate."""

    responder_id: int
    ca_id: int
    key: object
    certificate_der: bytes
    key_hash: bytes  # RFC 6960 4.2.1 ResponderID byKey: SHA-1 of the public key bits
    algorithm: bytes
    not_after: dt.datetime
    template: ResponseTemplate | None = None  # the constant parts of the answers it signs

    def sign(self, tbs: bytes) -> bytes:
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return self.key.sign(tbs, _ECDSA_SHA256)
        return self.key.sign(tbs, _PKCS1V15, _SHA256)


_SHA256 = hashes.SHA256()
_ECDSA_SHA256 = ec.ECDSA(_SHA256)
_PKCS1V15 = padding.PKCS1v15()


def make_signer(row: OcspResponder, key) -> Signer:
    cert = x509.load_der_x509_certificate(row.certificate_der)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    kind = "rsa" if isinstance(cert.public_key(), rsa.RSAPublicKey) else "ec"
    return Signer(responder_id=row.id, ca_id=row.ca_id, key=key,
                  certificate_der=row.certificate_der, key_hash=key_hash(spki),
                  algorithm=_ALGORITHMS[kind], not_after=row.not_after,
                  template=ResponseTemplate(_ALGORITHMS[kind], row.certificate_der))


def current_responder(session, ca_id: int, now: dt.datetime) -> OcspResponder | None:
    """The newest responder of the CA that is valid now."""
    return session.execute(select(OcspResponder).where(
        OcspResponder.ca_id == ca_id, OcspResponder.not_before <= now,
        OcspResponder.not_after > now).order_by(OcspResponder.not_after.desc(),
                                                 OcspResponder.id.desc())
        .limit(1)).scalar_one_or_none()


# The responder's key (docs/performance.md, "Which responder key"): RSA-2048 by default, because
# RFC 6960 4.3 makes sha256WithRSAEncryption the one algorithm every OCSP client SHALL process
# (ECDSA is a SHOULD), and GovCA's issuing CAs are RSA already, so a relying party that can
# validate a GovCA certificate can always validate its OCSP answers. Answers without a nonce are
# pre-signed, so the key type does not touch the read path. GOVCA_OCSP_RESPONDER_KEY=p256 gives
# an ECDSA P-256 responder (≈ 2.5× the nonce rate, smaller answers) where every relying party is
# known to handle ECDSA.
RESPONDER_KEYS = {"rsa2048": KeySpec("rsa", "2048"), "rsa3072": KeySpec("rsa", "3072"),
                  "p256": KeySpec("ec", "secp256r1"), "p384": KeySpec("ec", "secp384r1")}
DEFAULT_RESPONDER_KEY = "rsa2048"


def default_key_spec() -> KeySpec:
    name = os.environ.get("GOVCA_OCSP_RESPONDER_KEY", "").strip().lower() or \
        DEFAULT_RESPONDER_KEY
    if name not in RESPONDER_KEYS:
        raise ValueError(f"GOVCA_OCSP_RESPONDER_KEY={name!r}: use one of "
                         f"{', '.join(RESPONDER_KEYS)}")
    return RESPONDER_KEYS[name]


class ResponderManager:
    def __init__(self, db: Database, keys: KeyStore, clock: Clock,
                 issuance: Callable[[], IssuanceService], *, validity_days: int = 7,
                 renew_before: dt.timedelta = dt.timedelta(days=2),
                 key_spec: KeySpec | None = None,
                 actor: str = "system:ocsp") -> None:
        self.db, self.keys, self.clock, self.issuance = db, keys, clock, issuance
        self.validity_days, self.renew_before = validity_days, renew_before
        self.key_spec, self.actor = key_spec or default_key_spec(), actor

    def ensure(self, ca_name: str, *, force: bool = False) -> tuple[OcspResponder, bool]:
        """The CA's current responder; a new one when there is none, it expires within
        `renew_before`, or `force`. Returns (row, created)."""
        now = self.clock.now().replace(microsecond=0)
        with self.db.transaction() as s:
            ca = s.execute(select(CertificateAuthority).where(
                CertificateAuthority.name == ca_name)).scalar_one_or_none()
            if ca is None:
                raise NotFound(f"no CA named {ca_name!r}", field="ca")
            row = current_responder(s, ca.id, now)
            ca_id = ca.id
        if row is not None and not force and row.not_after - now > self.renew_before:
            return row, False
        subject = SubjectData(common_name=f"GovCA OCSP Responder {ca_name}"[:64],
                              organization="Ban Cơ yếu Chính phủ")
        label = f"govca-ocsp-{ca_name}-{now:%Y%m%d%H%M%S}"
        key = self.keys.generate(self.key_spec, label)
        try:
            # The CSR is signed by the HSM key itself (proof of possession without export).
            csr = (x509.CertificateSigningRequestBuilder().subject_name(build_name(subject))
                   .sign(key, hashes.SHA256()))
            cert_row = self.issuance().issue(IssueRequest(
                ca=ca_name, profile="ocsp-signing", actor=self.actor, subject=subject,
                csr=csr.public_bytes(serialization.Encoding.PEM),
                validity_days=self.validity_days, details={"purpose": "ocsp responder"}))
        except BaseException:
            self.keys.destroy(key.key_id)
            raise
        with self.db.transaction() as s:
            row = OcspResponder(ca_id=ca_id, certificate_id=cert_row.id,
                                certificate_der=cert_row.der, key_id=key.key_id.hex(),
                                key_label=label, not_before=cert_row.not_before,
                                not_after=cert_row.not_after, created_at=now)
            s.add(row)
            s.flush()
            audit.record(s, "ocsp.responder.issue", actor=self.actor, at=now, target=ca_name,
                         details={"serial": cert_row.serial, "key_label": label,
                                  "not_after": cert_row.not_after.isoformat(),
                                  "forced": bool(force)})
        log.info("new OCSP responder certificate %s for CA %s", cert_row.serial, ca_name)
        return row, True

    def ensure_all(self) -> list[tuple[str, bool]]:
        """Every active CA has a responder valid for more than `renew_before`."""
        with self.db.transaction() as s:
            names = s.execute(select(CertificateAuthority.name).where(
                CertificateAuthority.status == "active").order_by(CertificateAuthority.id)
            ).scalars().all()
        out = []
        for name in names:
            try:
                _row, created = self.ensure(name)
                out.append((name, created))
            except Exception:
                log.exception("cannot renew the OCSP responder of CA %s", name)
        return out
