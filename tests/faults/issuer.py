"""A process that issues certificates through the core service, one after another, and prints
what it released: the SIGKILL fault test (tests/faults/test_sigkill.py) kills it at random
moments. Run as `python -m tests.faults.issuer COUNT SUBSCRIBER_ID...` with the usual GOVCA_*
variables. Each line is flushed at once, so what the test reads is what the client had seen:

    ATTEMPT <n>                        before issue() is called
    ISSUED <n> <serial> <sha256 of DER> after issue() returned the stored certificate
"""
from __future__ import annotations

import hashlib
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sqlalchemy import select

from ca.issuance.service import IssueRequest
from ca.store.models import CertificateAuthority
from ra_portal.settings import Settings
from ra_portal.wiring import build_services


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    req = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")])).sign(key, hashes.SHA256())
    return req.public_bytes(serialization.Encoding.PEM)


def main(argv: list[str]) -> int:
    count, subscribers = int(argv[0]), [int(a) for a in argv[1:]]
    svc = build_services(Settings.from_env())
    service = svc.issuance()
    out = sys.stdout
    # Log in to the token before the first attempt. SoftHSM rewrites its token.object file at
    # every C_Login, and a SIGKILL in the middle of that write can leave the token unreadable:
    # a hazard of the file-based test HSM (docs/faults.md), not the one under test here.
    with svc.db.transaction() as s:
        ca = s.execute(select(CertificateAuthority).where(
            CertificateAuthority.name == "issuing")).scalar_one()
        key_id, label = ca.key_id, ca.key_label
    svc.keys.load(bytes.fromhex(key_id), label)
    for n in range(count):
        csr = _csr()
        out.write(f"ATTEMPT {n}\n")
        out.flush()
        cert = service.issue(IssueRequest(ca="issuing", profile="personal", csr=csr,
                                          actor="test:sigkill",
                                          subscriber_id=subscribers[n % len(subscribers)]))
        out.write(f"ISSUED {n} {cert.serial} {hashlib.sha256(cert.der).hexdigest()}\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
