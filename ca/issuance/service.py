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
from sqlalchemy import insert, select, update

from ca import audit, serial as serials
from ca.clock import Clock
from ca.csr import check_csr_key, parse_csr
from ca.errors import CAError, Conflict, InvalidInput, LintFailed, NotFound, PolicyViolation
from ca.issuance.builder import CertificateContent, IssuerView, build
from ca.issuance.lint import GATE
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


@dataclass(eq=False)
class _Prepared:
    """One request between steps 3 and 7 (what was checked, built and linted)."""
    req: IssueRequest
    profile: Profile
    now: dt.datetime
    name: x509.Name
    subject_text: str
    public_key: object
    spki_sha256: str
    email: str | None
    dns: tuple[str, ...]
    not_after: dt.datetime
    subscriber_id: int | None
    domain_id: int | None
    org_version_id: int | None
    issuer: IssuerView
    ca_spec: KeySpec
    opts: dict
    ca_id: int
    ca_name: str
    ca_key_id: str
    ca_label: str
    serial: int = 0
    builder: object = None
    tbs: bytes = b""
    row: dict = field(default_factory=dict)
    row_id: int = 0


def _seconds(t: dt.datetime) -> dt.datetime:
    return t.replace(microsecond=0)


_views: dict[tuple[str, bytes, str], IssuerView] = {}


def ca_view(ca: CertificateAuthority, base_url: str) -> IssuerView:
    """The issuer as the builder sees it; parsed once per (name, certificate, base URL)."""
    key = (ca.name, ca.certificate_der, base_url.rstrip("/"))
    view = _views.get(key)
    if view is None:
        if len(_views) > 256:
            _views.clear()
        view = _views[key] = IssuerView(
            name=ca.name, certificate=x509.load_der_x509_certificate(ca.certificate_der),
            base_url=key[2])
    return view


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
        prep = self._prepare(req)  # steps 1-3
        # 4. Reserve the serial and audit the intent (transaction 1); a collision of 159-bit
        # random serials (never seen) draws another serial, and builds and checks again.
        for _attempt in range(3):
            try:
                with self.db.transaction() as s:
                    self._reserve(s, prep)
                break
            except sa_exc.IntegrityError:
                log.warning("serial collision on CA %s; drawing another", prep.ca_name)
                self._build_and_lint(prep)
        else:  # pragma: no cover - 3 collisions of 159-bit random numbers
            raise Conflict("could not reserve a unique serial number")
        self.fault("after_reserve")
        der = self._sign(prep)  # 5 + 6 (marks the serial failed and raises on any error)
        # 7. Store and audit (transaction 2).
        with self.db.transaction() as s:
            return self._store(s, prep, der)

    def issue_batch(self, reqs: list[IssueRequest]) -> list[Certificate | CAError]:
        """Several certificates with the same guarantees as `issue`, in fewer transactions:
        each request is checked, built and linted on its own (a bad one fails alone and burns
        no serial); the serials of all good ones are reserved and their intents audited in one
        transaction; each is signed and checked; all signed ones are stored and audited in one
        transaction. The result has one entry per request: the certificate or the error."""
        out: list[Certificate | CAError | None] = [None] * len(reqs)
        preps: list[tuple[int, _Prepared]] = []
        for i, item in enumerate(self._prepare_many(reqs)):
            if isinstance(item, CAError):
                out[i] = item
            else:
                preps.append((i, item))
        if not preps:
            return out  # type: ignore[return-value]
        try:
            with self.db.transaction() as s:
                for _i, prep in preps:
                    self._reserve(s, prep)
        except sa_exc.IntegrityError:  # a serial collision: nothing was reserved; one by one
            log.warning("serial collision in a batch; issuing its requests one by one")
            for i, prep in preps:
                try:
                    out[i] = self.issue(prep.req)
                except CAError as exc:
                    out[i] = exc
            return out  # type: ignore[return-value]
        self.fault("after_reserve")
        signed: list[tuple[int, _Prepared, bytes]] = []
        for i, prep in preps:
            try:
                signed.append((i, prep, self._sign(prep)))
            except CAError as exc:
                out[i] = exc
        if signed:
            with self.db.transaction() as s:
                for i, prep, der in signed:
                    try:
                        out[i] = self._store(s, prep, der)
                    except Conflict as exc:  # abandoned meanwhile: nothing written for it
                        out[i] = exc
        return out  # type: ignore[return-value]

    # -- the steps ---------------------------------------------------------------------------
    def _prepare(self, req: IssueRequest) -> "_Prepared":
        """Steps 1-3: everything that can refuse a request before a serial is used."""
        profile, parsed = self._parse(req)
        now = _seconds(self.clock.now())
        with self.db.transaction() as s:
            prep = self._read(s, req, profile, parsed, now)
        self._build_and_lint(prep)
        return prep

    def _prepare_many(self, reqs: list[IssueRequest]) -> list["_Prepared | CAError"]:
        """`_prepare` for several requests with one read transaction (the CA row and the
        organisation tree are read once: the session's identity map keeps them)."""
        out: list = []
        for req in reqs:
            try:
                out.append(self._parse(req))
            except CAError as exc:
                out.append(exc)
        now = _seconds(self.clock.now())
        with self.db.transaction() as s:
            for i, (req, item) in enumerate(zip(reqs, out)):
                if isinstance(item, CAError):
                    continue
                try:
                    out[i] = self._read(s, req, item[0], item[1], now)
                except CAError as exc:
                    out[i] = exc
        seen: dict[str, int | None] = {}  # duplicate keys inside the batch itself
        for i, item in enumerate(out):
            if not isinstance(item, _Prepared):
                continue
            if item.spki_sha256 in seen and not item.profile.allow_duplicate_key:
                other = seen[item.spki_sha256]
                if other is None or other != item.subscriber_id:
                    out[i] = PolicyViolation("this public key is already certified for another "
                                             "holder; generate a new key pair", field="csr",
                                             code="duplicate_key")
                    continue
            seen.setdefault(item.spki_sha256, item.subscriber_id)
        for i, item in enumerate(out):
            if isinstance(item, _Prepared):
                try:
                    self._build_and_lint(item)
                except CAError as exc:
                    out[i] = exc
        return out

    def _parse(self, req: IssueRequest):
        profile = self.profile(req.profile)
        if profile.is_ca:
            raise PolicyViolation("CA certificates are made by the key ceremony "
                                  "(govca ca init-issuing), not by issuance", field="profile")
        # 1. CSR: encoding, signature, hash, CA rights (or the key of an earlier certificate).
        if req.reuse_key_serial is None:
            return profile, parse_csr(req.csr)
        if req.csr is not None:
            raise InvalidInput("give either a CSR or the certificate whose key is re-certified, "
                               "not both", field="csr")
        return profile, None

    def _read(self, s, req: IssueRequest, profile: Profile, parsed, now) -> "_Prepared":
        """2. Profile: key type, subject from registered data, validity, duplicate keys."""
        ca = s.execute(select(CertificateAuthority).where(
            CertificateAuthority.name == req.ca)).scalar_one_or_none()
        if ca is None:
            raise NotFound(f"no CA named {req.ca!r}", field="ca")
        if ca.status != "active":
            raise PolicyViolation(f"CA {ca.name!r} is {ca.status} and issues nothing", field="ca")
        if req.reuse_key_serial is not None:
            parsed = self._reused_key(s, req, ca)
        check_csr_key(parsed, profile.key_types)
        subject, email, subscriber_id, domain_id = self._subject(s, req, profile)
        org_version_id = subscriber_org_version_id(s, subscriber_id)  # models_org
        not_after = self._not_after(req, profile, ca, now)
        self._check_duplicate_key(s, parsed.spki_sha256, subscriber_id, profile)
        issuer = ca_view(ca, self.base_url)
        ca_spec = KeySpec(ca.key_type, ca.key_spec)
        name = build_name(subject)
        dns = tuple(clean_dns_name(d) for d in req.dns_names) if profile.dns_in_san else ()
        if profile.dns_in_san and not dns:
            raise InvalidInput("a TLS server certificate needs at least one DNS name",
                               field="dns_names")
        return _Prepared(req=req, profile=profile, now=now, name=name,
                         subject_text=name.rfc4514_string(), public_key=parsed.public_key,
                         spki_sha256=parsed.spki_sha256, email=email, dns=dns,
                         not_after=not_after, subscriber_id=subscriber_id, domain_id=domain_id,
                         org_version_id=org_version_id, issuer=issuer, ca_spec=ca_spec,
                         opts=sign_options(ca_spec, ca.signature_scheme, ca.hash_algorithm),
                         ca_id=ca.id, ca_name=ca.name, ca_key_id=ca.key_id,
                         ca_label=ca.key_label)

    def _build_and_lint(self, prep: "_Prepared") -> None:
        """3. Build, sign a linting copy with a throwaway key of the same shape, lint it."""
        prep.serial = serials.generate()
        prep.builder = build(prep.profile, prep.issuer, CertificateContent(
            subject=prep.name, public_key=prep.public_key, serial=prep.serial,
            not_before=prep.now, not_after=prep.not_after, email=prep.email,
            dns_names=prep.dns))
        linted = prep.builder.sign(lint_key(prep.ca_spec), **prep.opts)
        result = GATE.check(linted)  # pkilint per shape + per-certificate checks (lint.py)
        if not result.ok:
            raise LintFailed("the certificate failed the linter; nothing was signed: "
                             + "; ".join(result.errors), list(result.errors))
        prep.tbs = linted.tbs_certificate_bytes

    def _reserve(self, s, prep: "_Prepared") -> None:
        """4. The reserved row and the audited intent, in the caller's transaction."""
        req, serial_hex = prep.req, serials.to_hex(prep.serial)
        prep.row = dict(ca_id=prep.ca_id, serial=serial_hex, state="reserved",
                        subscriber_id=prep.subscriber_id, profile=prep.profile.name,
                        subject=prep.subject_text, not_before=prep.now,
                        not_after=prep.not_after, spki_sha256=prep.spki_sha256,
                        tbs_sha256=hashlib.sha256(prep.tbs).hexdigest(), reserved_at=prep.now,
                        organization_version_id=prep.org_version_id)
        table = Certificate.__table__
        prep.row_id = s.connection().execute(
            insert(table).values(**prep.row).returning(table.c.id)).scalar_one()
        audit.record(s, "cert.issue.intent", actor=req.actor, at=prep.now,
                     target=f"{prep.ca_name}:{serial_hex}", domain_id=prep.domain_id,
                     details={"profile": prep.profile.name, "subject": prep.subject_text,
                              "subscriber_id": prep.subscriber_id,
                              "not_after": prep.not_after.isoformat(), **req.details})

    def _sign(self, prep: "_Prepared") -> bytes:
        """5. Sign in the HSM with no transaction open; 6. check what came back. On any error
        the reserved serial is marked failed (never released) and the error raised."""
        try:
            key = self.keys.load(bytes.fromhex(prep.ca_key_id), prep.ca_label)
            signed = prep.builder.sign(key, **prep.opts)
            self.fault("after_sign")
            # 6. The HSM signed what was linted, and its signature verifies.
            check_signed(signed, prep.tbs, prep.issuer.public_key)
        except CAError as exc:
            self._fail(prep.row_id, prep.req.actor, prep.now, exc)
            raise
        except Exception as exc:  # unexpected: still nothing was released, so say so and stop
            log.exception("signing failed for reserved serial on CA %s", prep.ca_name)
            err = CAError(f"signing failed unexpectedly ({type(exc).__name__}); nothing was "
                          f"issued", code="signing_failed")
            self._fail(prep.row_id, prep.req.actor, prep.now, err)
            raise err from None
        return signed.public_bytes(serialization.Encoding.DER)

    def _store(self, s, prep: "_Prepared", der: bytes) -> Certificate:
        """7. Store the certificate and audit success, in the caller's transaction. Returns a
        detached Certificate holding what was written."""
        issued_at = _seconds(self.clock.now())
        fingerprint = hashlib.sha256(der).hexdigest()
        table = Certificate.__table__
        done = dict(der=der, state="issued", issued_at=issued_at, fingerprint_sha256=fingerprint)
        stored = s.connection().execute(update(table).where(
            table.c.id == prep.row_id, table.c.state == "reserved").values(**done))
        if stored.rowcount != 1:  # recovery abandoned the reservation meanwhile: never released
            raise Conflict(f"serial {prep.row['serial']} was abandoned by recovery while it was "
                           f"being signed; nothing was issued", code="reservation_abandoned")
        audit.record(s, "cert.issue", actor=prep.req.actor, at=issued_at,
                     target=f"{prep.ca_name}:{prep.row['serial']}", domain_id=prep.domain_id,
                     details={"profile": prep.profile.name, "fingerprint": fingerprint,
                              "subscriber_id": prep.subscriber_id, **prep.req.details})
        return Certificate(id=prep.row_id, **{**prep.row, **done})

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
