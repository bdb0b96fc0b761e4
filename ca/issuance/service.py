"""The issuance cycle, one linear function with numbered steps (after Boulder's CA):

 1. parse and check the CSR            (no state touched)
 2. apply the profile: key, validity, subject from registered data, duplicate keys
 3. build the TBS and sign a linting copy with a throwaway key; pkilint it
 4. reserve the serial and audit the intent           -- transaction 1
 5. sign in the HSM, no transaction open
 6. check that the HSM signed exactly what was linted, and that the signature verifies
 7. store the certificate and audit success            -- transaction 2

Bad input fails in 1-3, so it burns no serial and stores nothing. A crash between 4 and 7 leaves
a reserved serial and an audited intent but never a released certificate that the database does
not hold; `recover_intents` marks such serials as never released.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from ca import audit, serial as serials
from ca.clock import Clock
from ca.csr import check_csr_key, parse_csr
from ca.errors import CAError, Conflict, InvalidInput, LintFailed, NotFound, PolicyViolation
from ca.issuance.builder import CertificateContent, IssuerView, build
from ca.issuance.lint import lint_certificate
from ca.issuance.signing import check_signed, lint_key, sign_options
from ca.keys import KeySpec, describe
from ca.names import SubjectData, build_name, clean_dns_name, clean_email
from ca.ports import KeyStore
from ca.profiles.model import Profile
from ca.store.database import Database
from ca.store.models import Certificate, CertificateAuthority, Subscriber
from ca.subjects import subject_for
from ca.store.models_org import subscriber_org_version_id

log = logging.getLogger(__name__)

Fault = Callable[[str], None]


def _no_fault(point: str) -> None:
    return None


@dataclass(frozen=True)
class CertifiedKey:
    """A public key taken from an earlier certificate (same shape as ParsedCSR for step 2)."""
    public_key: object
    key_spec: KeySpec
    spki_sha256: str


@dataclass(frozen=True)
class IssueRequest:
    ca: str
    profile: str
    csr: bytes | str | None
    actor: str
    subscriber_id: int | None = None
    subject: SubjectData | None = None  # for profiles without a subscriber (responder, device)
    email: str | None = None
    dns_names: tuple[str, ...] = ()
    not_after: dt.datetime | None = None  # e.g. a change of information keeps the old expiry
    validity_days: int | None = None
    details: dict = field(default_factory=dict)
    # Re-certify the public key of this earlier certificate of the same subscriber instead of
    # a CSR (a change of information when the key stays on the holder's token: reorganisations).
    reuse_key_serial: str | None = None


def _seconds(t: dt.datetime) -> dt.datetime:
    return t.replace(microsecond=0)


def ca_view(ca: CertificateAuthority, base_url: str) -> IssuerView:
    return IssuerView(name=ca.name, certificate=x509.load_der_x509_certificate(ca.certificate_der),
                      base_url=base_url.rstrip("/"))


class IssuanceService:
    def __init__(self, db: Database, keys: KeyStore, clock: Clock, profiles: dict[str, Profile],
                 base_url: str, fault: Fault = _no_fault) -> None:
        self.db, self.keys, self.clock = db, keys, clock
        self.profiles, self.base_url, self.fault = profiles, base_url.rstrip("/"), fault

    # -- helpers ---------------------------------------------------------------------------
    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise InvalidInput(f"unknown profile {name!r}; known profiles: "
                               f"{', '.join(sorted(self.profiles))}", field="profile") from None

    def issuer_key(self, ca: CertificateAuthority):
        return self.keys.load(bytes.fromhex(ca.key_id), ca.key_label)

    # -- the cycle -------------------------------------------------------------------------
    def issue(self, req: IssueRequest) -> Certificate:
        profile = self.profile(req.profile)
        if profile.is_ca:
            raise PolicyViolation("CA certificates are made by the key ceremony "
                                  "(govca ca init-issuing), not by issuance", field="profile")

        # 1. CSR: encoding, signature, hash, CA rights (or the key of an earlier certificate).
        if req.reuse_key_serial is None:
            parsed = parse_csr(req.csr)
        elif req.csr is not None:
            raise InvalidInput("give either a CSR or the certificate whose key is re-certified, "
                               "not both", field="csr")

        now = _seconds(self.clock.now())
        with self.db.transaction() as s:
            ca = s.execute(select(CertificateAuthority).where(
                CertificateAuthority.name == req.ca)).scalar_one_or_none()
            if ca is None:
                raise NotFound(f"no CA named {req.ca!r}", field="ca")
            if ca.status != "active":
                raise PolicyViolation(f"CA {ca.name!r} is {ca.status} and issues nothing", field="ca")

            # 2. Profile: key type, subject from registered data, validity, duplicate keys.
            if req.reuse_key_serial is not None:
                parsed = self._reused_key(s, req, ca)
            check_csr_key(parsed, profile.key_types)
            subject, email, subscriber_id, domain_id = self._subject(s, req, profile)
            org_version_id = subscriber_org_version_id(s, subscriber_id)  # models_org
            not_after = self._not_after(req, profile, ca, now)
            self._check_duplicate_key(s, parsed.spki_sha256, subscriber_id, profile)
            issuer = ca_view(ca, self.base_url)
            ca_spec = KeySpec(ca.key_type, ca.key_spec)
            ca_scheme, ca_hash = ca.signature_scheme, ca.hash_algorithm
            ca_id, ca_name, ca_key_id, ca_label = ca.id, ca.name, ca.key_id, ca.key_label

        name = build_name(subject)
        dns = tuple(clean_dns_name(d) for d in req.dns_names) if profile.dns_in_san else ()
        if profile.dns_in_san and not dns:
            raise InvalidInput("a TLS server certificate needs at least one DNS name",
                               field="dns_names")
        opts = sign_options(ca_spec, ca_scheme, ca_hash)

        # 3. Build, sign a linting copy with a throwaway key of the same shape, lint it.
        for _attempt in range(3):
            serial = serials.generate()
            builder = build(profile, issuer, CertificateContent(
                subject=name, public_key=parsed.public_key, serial=serial, not_before=now,
                not_after=not_after, email=email, dns_names=dns))
            linted = builder.sign(lint_key(ca_spec), **opts)
            result = lint_certificate(linted.public_bytes(serialization.Encoding.DER))
            if not result.ok:
                raise LintFailed("the certificate failed the linter; nothing was signed: "
                                 + "; ".join(result.errors), list(result.errors))
            tbs = linted.tbs_certificate_bytes

            # 4. Reserve the serial and audit the intent (transaction 1).
            try:
                with self.db.transaction() as s:
                    row = Certificate(
                        ca_id=ca_id, serial=serials.to_hex(serial), state="reserved",
                        subscriber_id=subscriber_id, profile=profile.name,
                        subject=name.rfc4514_string(), not_before=now, not_after=not_after,
                        spki_sha256=parsed.spki_sha256,
                        tbs_sha256=hashlib.sha256(tbs).hexdigest(), reserved_at=now,
                        organization_version_id=org_version_id)
                    s.add(row)
                    s.flush()
                    audit.record(s, "cert.issue.intent", actor=req.actor, at=now,
                                 target=f"{ca_name}:{row.serial}", domain_id=domain_id,
                                 details={"profile": profile.name, "subject": row.subject,
                                          "subscriber_id": subscriber_id,
                                          "not_after": not_after.isoformat(), **req.details})
                    row_id = row.id
                break
            except sa_exc.IntegrityError:
                log.warning("serial collision on CA %s; drawing another", ca_name)
                continue
        else:  # pragma: no cover - 3 collisions of 159-bit random numbers
            raise Conflict("could not reserve a unique serial number")
        self.fault("after_reserve")

        # 5. Sign in the HSM with no transaction open.
        try:
            key = self.keys.load(bytes.fromhex(ca_key_id), ca_label)
            signed = builder.sign(key, **opts)
            self.fault("after_sign")
            # 6. The HSM signed what was linted, and its signature verifies.
            check_signed(signed, tbs, issuer.certificate.public_key())
        except CAError as exc:
            self._fail(row_id, req.actor, now, exc)
            raise
        except Exception as exc:  # unexpected: still nothing was released, so say so and stop
            log.exception("signing failed for reserved serial on CA %s", ca_name)
            err = CAError(f"signing failed unexpectedly ({type(exc).__name__}); nothing was "
                          f"issued", code="signing_failed")
            self._fail(row_id, req.actor, now, err)
            raise err from None

        # 7. Store and audit (transaction 2).
        der = signed.public_bytes(serialization.Encoding.DER)
        with self.db.transaction() as s:
            row = s.get(Certificate, row_id)
            row.der = der
            row.state = "issued"
            row.issued_at = _seconds(self.clock.now())
            row.fingerprint_sha256 = hashlib.sha256(der).hexdigest()
            audit.record(s, "cert.issue", actor=req.actor, at=row.issued_at,
                         target=f"{ca_name}:{row.serial}", domain_id=domain_id,
                         details={"profile": profile.name, "fingerprint": row.fingerprint_sha256,
                                  "subscriber_id": subscriber_id, **req.details})
        return row

    def _fail(self, row_id: int, actor: str, now: dt.datetime, exc: CAError) -> None:
        with self.db.transaction() as s:
            row = s.get(Certificate, row_id)
            row.state = "failed"
            row.failure_reason = f"{exc.code}: {exc.message}"
            audit.record(s, "cert.issue.failed", actor=actor, at=_seconds(self.clock.now()),
                         target=f"{row.ca.name}:{row.serial}",
                         details={"error": exc.code, "message": exc.message})

    # -- step 2 pieces -----------------------------------------------------------------------
    def _reused_key(self, s, req: IssueRequest, ca: CertificateAuthority) -> CertifiedKey:
        """The public key of an earlier certificate of the same subscriber from this CA."""
        try:
            serial_hex = serials.to_hex(serials.parse(str(req.reuse_key_serial)))
        except ValueError as exc:
            raise InvalidInput(str(exc), field="serial") from None
        old = s.execute(select(Certificate).where(
            Certificate.ca_id == ca.id, Certificate.serial == serial_hex)).scalar_one_or_none()
        if old is None or old.state != "issued" or old.der is None:
            raise NotFound(f"no issued certificate {req.reuse_key_serial} on CA {ca.name!r}",
                           field="serial")
        if req.subscriber_id is None or old.subscriber_id != req.subscriber_id:
            raise PolicyViolation("only the holder's own key can be certified again",
                                  field="serial", code="not_holder_key")
        public_key = x509.load_der_x509_certificate(old.der).public_key()
        return CertifiedKey(public_key=public_key, key_spec=describe(public_key),
                            spki_sha256=old.spki_sha256)

    def _subject(self, s, req: IssueRequest, profile: Profile):
        if profile.subject in ("person", "organization"):
            if req.subscriber_id is None:
                raise InvalidInput(f"profile {profile.name!r} needs a registered subscriber",
                                   field="subscriber")
            sub = s.get(Subscriber, req.subscriber_id)
            if sub is None:
                raise NotFound(f"no subscriber with id {req.subscriber_id}", field="subscriber")
            if sub.kind != profile.subject:
                raise PolicyViolation(f"profile {profile.name!r} is for {profile.subject} "
                                      f"subscribers; subscriber {sub.id} is a {sub.kind}",
                                      field="profile")
            email = clean_email(sub.email) if sub.email and profile.email_in_san else sub.email
            return subject_for(s, sub), email, sub.id, sub.domain_id
        if req.subject is None:
            raise InvalidInput(f"profile {profile.name!r} needs an explicit subject",
                               field="subject")
        email = clean_email(req.email) if req.email else None
        sub_id = req.subscriber_id
        domain_id = None
        if sub_id is not None:
            sub = s.get(Subscriber, sub_id)
            if sub is None:
                raise NotFound(f"no subscriber with id {sub_id}", field="subscriber")
            domain_id = sub.domain_id
        return req.subject, email, sub_id, domain_id

    def _not_after(self, req: IssueRequest, profile: Profile, ca: CertificateAuthority,
                   now: dt.datetime) -> dt.datetime:
        cap = now + dt.timedelta(days=profile.max_validity_days)
        if req.not_after is not None:
            not_after = _seconds(req.not_after)
            if not_after > cap:
                raise PolicyViolation(f"the requested expiry {not_after:%Y-%m-%d} is beyond the "
                                      f"profile's limit of {profile.max_validity_days} days",
                                      field="not_after")
        else:
            days = req.validity_days or profile.validity_days
            if days <= 0 or days > profile.max_validity_days:
                raise PolicyViolation(f"validity of {days} days is outside 1..."
                                      f"{profile.max_validity_days} for profile "
                                      f"{profile.name!r}", field="validity_days")
            not_after = now + dt.timedelta(days=days)
        # Never beyond the issuer's own expiry (RFC 5280 6.1: a path is valid only while
        # every certificate in it is).
        not_after = min(not_after, ca.not_after)
        if not_after <= now:
            raise PolicyViolation("the certificate would already be expired", field="not_after")
        return not_after

    def _check_duplicate_key(self, s, spki: str, subscriber_id: int | None,
                             profile: Profile) -> None:
        if s.execute(select(CertificateAuthority.id).where(
                CertificateAuthority.spki_sha256 == spki)).first():
            raise PolicyViolation("the CSR's public key is a CA key; it cannot be certified "
                                  "again", field="csr", code="ca_key_reuse")
        if profile.allow_duplicate_key:
            return
        other = s.execute(select(Certificate.subscriber_id).where(
            Certificate.spki_sha256 == spki, Certificate.state.in_(("issued", "reserved")),
        )).scalars().all()
        if any(o != subscriber_id or subscriber_id is None for o in other):
            raise PolicyViolation("this public key is already certified for another holder; "
                                  "generate a new key pair", field="csr", code="duplicate_key")


def recover_intents(db: Database, clock: Clock, older_than: dt.timedelta,
                    actor: str = "system:recovery") -> list[str]:
    """Reserved serials whose issuance never completed were never released: mark them so."""
    now = _seconds(clock.now())
    cutoff = now - older_than
    resolved: list[str] = []
    with db.transaction() as s:
        rows = s.execute(select(Certificate).where(
            Certificate.state == "reserved", Certificate.reserved_at <= cutoff)
            .order_by(Certificate.id)).scalars().all()
        for row in rows:
            row.state = "abandoned"
            row.failure_reason = "issuance did not complete; the serial was never released"
            audit.record(s, "cert.issue.abandoned", actor=actor, at=now,
                         target=f"{row.ca.name}:{row.serial}",
                         details={"reserved_at": row.reserved_at.isoformat()})
            resolved.append(f"{row.ca.name}:{row.serial}")
    return resolved
