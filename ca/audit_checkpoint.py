"""The audit key ceremony (key in the HSM, certificate through the issuance cycle) and signed
checkpoints of the chain head."""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from ca import audit
from ca.audit import GENESIS, AuditTampered
from ca.audit_chain import checkpoint_payload, payload_digest, sign_payload, \
    signature_algorithm
from ca.audit_verify import count_events, to_checkpoint_record, verify_segment
from ca.clock import Clock
from ca.errors import Conflict, NotFound
from ca.issuance.service import IssuanceService, IssueRequest
from ca.keys import KeySpec
from ca.names import SubjectData
from ca.ports import KeyStore
from ca.store.database import Database
from ca.store.models import AuditHead, CertificateAuthority
from ca.store.models_audit import AuditCheckpoint, AuditKey

log = logging.getLogger(__name__)

AUDIT_PROFILE = "audit-signing"
DEFAULT_KEY = KeySpec("ec", "secp256r1")


@dataclass(frozen=True)
class AuditKeyResult:
    key: AuditKey
    created: bool


def active_key(session) -> AuditKey | None:
    return session.execute(select(AuditKey).where(AuditKey.status == "active")
                           .order_by(AuditKey.id.desc()).limit(1)).scalar_one_or_none()


def _subject(ca: CertificateAuthority, now: dt.datetime) -> SubjectData:
    name = x509.Name.from_rfc4514_string(ca.subject)
    orgs = name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return SubjectData(common_name=f"GovCA Audit Signing {now:%Y-%m-%d}",
                       organization=str(orgs[0].value) if orgs else None)


def init_key(db: Database, keys: KeyStore, issuance: IssuanceService, clock: Clock, *,
             ca: str = "issuing", key_spec: KeySpec = DEFAULT_KEY, actor: str = "operator:cli",
             force: bool = False) -> AuditKeyResult:
    """Idempotent: the active audit key, or (none, or `force`) a new key generated in the HSM,
    certified by CA `ca` through the issuance cycle. `force` retires the previous key; its
    certificate stays to verify the checkpoints it signed."""
    now = clock.now().replace(microsecond=0)
    with db.transaction() as s:
        current = active_key(s)
        if current is not None and not force:
            return AuditKeyResult(current, created=False)
        issuer = s.execute(select(CertificateAuthority).where(
            CertificateAuthority.name == ca)).scalar_one_or_none()
        if issuer is None:
            raise NotFound(f"no CA named {ca!r}; run the CA key ceremony first", field="ca")
        subject = _subject(issuer, now)

    label = f"govca-audit-{now:%Y%m%d%H%M%S}"
    key = keys.generate(key_spec, label)
    try:
        # The CSR is signed by the HSM key itself: proof of possession without export.
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "audit")]))
               .sign(key, hashes.SHA256()))
        cert_row = issuance.issue(IssueRequest(
            ca=ca, profile=AUDIT_PROFILE, actor=actor, subject=subject,
            csr=csr.public_bytes(serialization.Encoding.PEM), details={"purpose": "audit"}))
    except BaseException:
        keys.destroy(key.key_id)
        raise
    der = cert_row.der
    with db.transaction() as s:
        retired = []
        for old in s.execute(select(AuditKey).where(AuditKey.status == "active")).scalars():
            old.status = "retired"
            retired.append(old.fingerprint_sha256)
        row = AuditKey(status="active", key_label=label, key_id=key.key_id.hex(),
                       key_type=key_spec.type, key_spec=key_spec.spec, ca_name=ca,
                       serial=cert_row.serial, certificate_der=der,
                       fingerprint_sha256=hashlib.sha256(der).hexdigest(),
                       not_after=cert_row.not_after, created_at=now)
        s.add(row)
        s.flush()
        audit.record(s, "audit.key.init", actor=actor, at=now, target=f"{ca}:{row.serial}",
                     details={"key": str(key_spec), "key_label": label, "key_id": row.key_id,
                              "fingerprint": row.fingerprint_sha256, "retired": retired,
                              "forced": bool(force)})
    return AuditKeyResult(row, created=True)


def take_checkpoint(db: Database, keys: KeyStore, clock: Clock, *, only_if_changed: bool = False,
                    ) -> AuditCheckpoint | None:
    """Sign the chain head with the active audit key. The events since the previous checkpoint
    are verified first: a broken chain is never signed. With `only_if_changed`, nothing is done
    when no event was appended since the last checkpoint (returns None)."""
    for _attempt in range(3):
        with db.transaction() as s:
            akey = active_key(s)
            if akey is None:
                raise NotFound("no audit key: run `govca audit init-key` first", field="audit_key")
            head = s.get(AuditHead, 1)
            head_seq, head_hash = (head.seq, head.hash) if head is not None else (0, GENESIS)
            last_row = s.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.number.desc())
                                 .limit(1)).scalar_one_or_none()
            last = to_checkpoint_record(last_row) if last_row is not None else None
            if only_if_changed and last is not None and last.seq == head_seq:
                return None
            if last is not None and head_seq < last.seq:
                raise AuditTampered(f"the head ({head_seq}) is behind the last checkpoint "
                                    f"({last.seq}): events were removed")
            problems = verify_segment(s, last, head_seq, head_hash)
            if problems:
                raise AuditTampered("the audit chain is broken; no checkpoint was signed: "
                                    + problems[0].line(), problems=[p.line() for p in problems])
            count = count_events(s, head_seq)
            key_id, key_label, fingerprint = akey.key_id, akey.key_label, akey.fingerprint_sha256
        at = clock.now()
        number = (last.number + 1) if last is not None else 1
        prev = payload_digest(last.payload()) if last is not None else GENESIS
        payload = checkpoint_payload(number=number, seq=head_seq, hash=head_hash, count=count,
                                     at=at, prev=prev, key_fingerprint=fingerprint)
        key = keys.load(bytes.fromhex(key_id), key_label)  # signing runs in the HSM
        algorithm = signature_algorithm(key.public_key())
        signature = sign_payload(key, algorithm, payload)
        try:
            with db.transaction() as s:
                row = AuditCheckpoint(number=number, seq=head_seq, hash=head_hash,
                                      event_count=count, at=at, prev=prev,
                                      key_fingerprint=fingerprint, algorithm=algorithm,
                                      signature=signature)
                s.add(row)
            return row
        except sa_exc.IntegrityError:
            log.info("checkpoint %d was taken concurrently; retrying", number)
    raise Conflict("another process kept taking checkpoints; try again")


def checkpoint(services) -> AuditCheckpoint | None:
    """For the scheduler: sign the head if events were appended since the last checkpoint.
    `services` is the service container (db, keys, clock). Returns None when nothing changed or
    no audit key exists yet (logged)."""
    with services.db.transaction() as s:
        if active_key(s) is None:
            log.warning("audit checkpoint skipped: no audit key (govca audit init-key)")
            return None
    return take_checkpoint(services.db, services.keys, services.clock, only_if_changed=True)
