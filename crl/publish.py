"""CRL publication: take the next CRL number with its row, sign in the HSM, keep every CRL."""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select

from ca import audit
from ca.clock import Clock
from ca.errors import NotFound, PolicyViolation
from ca.issuance.signing import sign_options
from ca.keys import KeySpec
from ca.ports import KeyStore
from ca.store.database import Database
from ca.store.models import Certificate, CertificateAuthority
from ca.store.models_crl import PublishedCRL
from crl.crl_builder import CrlEntry, build_crl, consume

log = logging.getLogger(__name__)

# Revocations whose time was taken just before a base CRL's snapshot may commit just after it:
# a delta CRL repeats anything revoked this long before its base's thisUpdate (harmless).
DELTA_OVERLAP = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CrlInfo:
    """A published CRL as served over HTTP."""

    ca: str
    kind: str
    crl_number: int
    base_crl_number: int | None
    this_update: dt.datetime
    next_update: dt.datetime
    entries: int
    der: bytes
    sha256: str


def delta_period(ca: CertificateAuthority) -> int:
    """Seconds between delta CRLs: a twelfth of the full CRL interval, at least a minute."""
    return max(60, ca.crl_interval_seconds // 12)


def _info(ca_name: str, row: PublishedCRL) -> CrlInfo:
    return CrlInfo(ca=ca_name, kind=row.kind, crl_number=row.crl_number,
                   base_crl_number=row.base_crl_number, this_update=row.this_update,
                   next_update=row.next_update, entries=row.entries, der=row.der,
                   sha256=row.sha256)


class CrlPublisher:
    def __init__(self, db: Database, keys: KeyStore, clock: Clock, base_url: str,
                 actor: str = "system:crl") -> None:
        self.db, self.keys, self.clock = db, keys, clock
        self.base_url, self.actor = base_url.rstrip("/"), actor

    def delta_url(self, ca_name: str) -> str:
        return f"{self.base_url}/pki/crl/{ca_name}-delta.crl"

    # -- publication ----------------------------------------------------------------------
    def publish(self, ca_name: str, kind: str = "full") -> CrlInfo:
        """Publish one CRL. Transaction 1 locks the CA row, takes max(number)+1 and inserts the
        row (so two publishers can never take the same number: the CA row lock serialises them
        and the unique constraints back it up) and reads the entries; the HSM signs with no
        transaction open; transaction 2 stores the DER and the audit event."""
        if kind not in ("full", "delta"):
            raise PolicyViolation(f"unknown CRL kind {kind!r}", field="kind")
        now = self.clock.now().replace(microsecond=0)
        with self.db.transaction() as s:
            ca = s.execute(select(CertificateAuthority).where(
                CertificateAuthority.name == ca_name).with_for_update()).scalar_one_or_none()
            if ca is None:
                raise NotFound(f"no CA named {ca_name!r}", field="ca")
            last = s.execute(select(func.max(PublishedCRL.crl_number)).where(
                PublishedCRL.ca_id == ca.id)).scalar_one()
            number = (last or 0) + 1
            base = None
            q = (select(Certificate.serial, Certificate.revoked_at, Certificate.revocation_reason,
                        Certificate.invalidity_date)
                 .where(Certificate.ca_id == ca.id, Certificate.state == "issued",
                        Certificate.revoked_at.is_not(None)))
            if kind == "delta":
                base = s.execute(select(PublishedCRL).where(
                    PublishedCRL.ca_id == ca.id, PublishedCRL.kind == "full",
                    PublishedCRL.der.is_not(None)).order_by(PublishedCRL.crl_number.desc())
                    .limit(1)).scalar_one_or_none()
                if base is None:
                    raise PolicyViolation(f"CA {ca_name!r} has no complete CRL yet; publish the "
                                          f"full CRL first", field="kind")
                q = q.where(Certificate.revoked_at >= base.this_update - DELTA_OVERLAP)
                # RFC 5280 5.2.4: a delta is useless after its base; never outlive it.
                next_update = min(now + dt.timedelta(seconds=ca.crl_interval_seconds),
                                  base.next_update)
            else:
                next_update = now + dt.timedelta(seconds=ca.crl_validity_seconds)
            entries = [CrlEntry(int(serial, 16), revoked_at, reason, invalidity)
                       for serial, revoked_at, reason, invalidity in s.execute(q)]
            n_entries = len(entries)
            row = PublishedCRL(ca_id=ca.id, kind=kind, crl_number=number,
                               base_crl_number=base.crl_number if base else None,
                               this_update=now, next_update=next_update, entries=n_entries,
                               created_at=now)
            s.add(row)
            s.flush()
            row_id = row.id
            issuer = x509.load_der_x509_certificate(ca.certificate_der)
            opts = sign_options(KeySpec(ca.key_type, ca.key_spec), ca.signature_scheme,
                                ca.hash_algorithm)
            key_ref = (bytes.fromhex(ca.key_id), ca.key_label)
            base_number = base.crl_number if base else None

        key = self.keys.load(*key_ref)
        crl = build_crl(issuer=issuer, key=key, sign_options=opts, crl_number=number,
                        this_update=now, next_update=next_update, entries=consume(entries),
                        base_crl_number=base_number,
                        freshest_url=self.delta_url(ca_name) if kind == "full" else None)
        if not crl.is_signature_valid(issuer.public_key()):
            raise PolicyViolation("the HSM's CRL signature does not verify; nothing published")
        der = crl.public_bytes(serialization.Encoding.DER)
        digest = hashlib.sha256(der).hexdigest()
        with self.db.transaction() as s:
            row = s.get(PublishedCRL, row_id)
            row.der, row.sha256 = der, digest
            row.published_at = self.clock.now()
            audit.record(s, "crl.publish", actor=self.actor, at=now, target=ca_name,
                         details={"kind": kind, "crl_number": number, "entries": n_entries,
                                  "base_crl_number": base_number,
                                  "next_update": next_update.isoformat(), "sha256": digest})
            info = _info(ca_name, row)
        log.info("published %s CRL %d of %s (%d entries)", kind, number, ca_name, n_entries)
        return info

    def publish_all(self, ca_name: str) -> list[CrlInfo]:
        """A full CRL and, right after it, the delta that goes with it."""
        return [self.publish(ca_name, "full"), self.publish(ca_name, "delta")]

    def publish_due(self) -> list[CrlInfo]:
        """What the scheduler runs: for each active CA, a full CRL when the interval has passed
        (or none exists), else a delta when the delta period has passed."""
        now = self.clock.now()
        done: list[CrlInfo] = []
        with self.db.transaction() as s:
            cas = s.execute(select(CertificateAuthority).where(
                CertificateAuthority.status == "active")).scalars().all()
            plan = []
            for ca in cas:
                full = self._latest(s, ca.id, "full")
                delta = self._latest(s, ca.id, "delta")
                if full is None or now >= full.this_update + dt.timedelta(
                        seconds=ca.crl_interval_seconds) or now >= full.next_update:
                    plan.append((ca.name, "all"))
                elif delta is None or delta.base_crl_number != full.crl_number or \
                        now >= delta.this_update + dt.timedelta(seconds=delta_period(ca)):
                    plan.append((ca.name, "delta"))
        for name, what in plan:
            try:
                done.extend(self.publish_all(name) if what == "all" else [self.publish(name, "delta")])
            except Exception:  # one CA's failure must not stop the others
                log.exception("CRL publication failed for CA %s", name)
        return done

    # -- reading --------------------------------------------------------------------------
    @staticmethod
    def _latest(s, ca_id: int, kind: str) -> PublishedCRL | None:
        return s.execute(select(PublishedCRL).where(
            PublishedCRL.ca_id == ca_id, PublishedCRL.kind == kind,
            PublishedCRL.der.is_not(None)).order_by(PublishedCRL.crl_number.desc())
            .limit(1)).scalar_one_or_none()

    def current(self, ca_name: str, kind: str = "full") -> CrlInfo | None:
        with self.db.transaction() as s:
            ca_id = s.execute(select(CertificateAuthority.id).where(
                CertificateAuthority.name == ca_name)).scalar_one_or_none()
            if ca_id is None:
                return None
            row = self._latest(s, ca_id, kind)
            return _info(ca_name, row) if row is not None else None

    def history(self, ca_name: str, limit: int = 100) -> list[CrlInfo]:
        """Every CRL published for the CA, newest first (RFC 5280 5: kept, never deleted)."""
        with self.db.transaction() as s:
            ca_id = s.execute(select(CertificateAuthority.id).where(
                CertificateAuthority.name == ca_name)).scalar_one_or_none()
            if ca_id is None:
                raise NotFound(f"no CA named {ca_name!r}", field="ca")
            rows = s.execute(select(PublishedCRL).where(
                PublishedCRL.ca_id == ca_id, PublishedCRL.der.is_not(None))
                .order_by(PublishedCRL.crl_number.desc()).limit(limit)).scalars().all()
            return [_info(ca_name, r) for r in rows]

    def at(self, ca_name: str, when: dt.datetime, kind: str = "full") -> CrlInfo | None:
        """The CRL that was current at `when` (history for verifying old signatures)."""
        with self.db.transaction() as s:
            ca_id = s.execute(select(CertificateAuthority.id).where(
                CertificateAuthority.name == ca_name)).scalar_one_or_none()
            if ca_id is None:
                raise NotFound(f"no CA named {ca_name!r}", field="ca")
            row = s.execute(select(PublishedCRL).where(
                PublishedCRL.ca_id == ca_id, PublishedCRL.kind == kind,
                PublishedCRL.der.is_not(None), PublishedCRL.this_update <= when)
                .order_by(PublishedCRL.crl_number.desc()).limit(1)).scalar_one_or_none()
            return _info(ca_name, row) if row is not None else None
