"""The issuance cycle, one linear function with numbered steps (after Boulder's CA):

 1. parse and check the CSR            (no state touched)
 2. apply the profile: key, validity, subject from registered data, duplicate keys
 3. build the TBS and sign a linting copy with a throwaway key; pkilint it
 4. reserve the serial and audit the intent           -- transaction 1
 5. sign in the HSM, no transaction open
 6. check that the HSM signed exactly what was linted, and that the signature verifies
 7. store the certificate and audit success            -- transaction 2

`issue_batch` runs the same steps for many requests: step 2's reads are a few set-based queries
for the whole batch (`_Reads`), steps 4 and 7 are one transaction each for the whole batch (one
multi-row INSERT, one executemany UPDATE, `audit.record_many`), and step 5 signs in
`sign_threads` threads. Step 5 has the HSM sign the linted TBS itself; the certificate is
assembled around the signature and step 6 parses and checks it. `issue` is a batch of one.

Bad input fails in 1-3, so it burns no serial and stores nothing. A crash between 4 and 7 leaves
a reserved serial and an audited intent but never a released certificate that the database does
not hold; `recover_intents` marks such serials as never released.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from sqlalchemy import exc as sa_exc
from sqlalchemy import bindparam, insert, select, update

from ca import audit, serial as serials
from ca.clock import Clock
from ca.csr import check_csr_key, parse_csr, parse_stored_csr
from ca.errors import (CAError, Conflict, IntegrityError, InvalidInput, LintFailed, NotFound,
                       PolicyViolation)
from ca.issuance.builder import CertificateContent, IssuerView, build
from ca.issuance.lint import GATE, der_tlv, value_findings
from ca.issuance.signing import check_signed, lint_key, sign_options
from ca.issuance.template import TEMPLATES, san_values
from ca.keys import KeySpec, describe
from ca.names import SubjectData, build_name, clean_dns_name, clean_email, name_text
from ca.ports import KeyStore
from ca.profiles.model import Profile
from ca.store.database import Database, in_chunks, next_ids
from ca.store.models import (Certificate, CertificateAuthority, Organization, RaDomain,
                             Subscriber)
from ca.store.models_org import OrganizationVersion
from ca.subjects import chain_from, subject_from_chain

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
    # The CSR is one the RA stored after checking it, its signature included
    # (ca.csr.parse_stored_csr): issuance repeats every check but the proof of possession.
    csr_stored: bool = False


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
    sig_alg: bytes = b""  # DER of the linted copy's signatureAlgorithm
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


def _signature_algorithm_der(cert_der: bytes, tbs: bytes) -> bytes:
    """The signatureAlgorithm TLV of a Certificate, which follows its TBS."""
    pos = 2 + (cert_der[1] & 0x7F if cert_der[1] & 0x80 else 0)
    if cert_der[pos:pos + len(tbs)] != tbs:
        raise IntegrityError("the linted certificate does not start with its TBS")
    pos += len(tbs)
    first = cert_der[pos + 1]
    n = first & 0x7F if first & 0x80 else 0
    length = int.from_bytes(cert_der[pos + 2:pos + 2 + n], "big") if n else first
    return cert_der[pos:pos + 2 + n + length]


def _hsm_sign(key, tbs: bytes, opts: dict) -> bytes:
    """What CertificateBuilder.sign(key, **opts) asks of the key, on the TBS bytes."""
    algorithm = opts["algorithm"]
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(tbs, opts.get("rsa_padding") or padding.PKCS1v15(), algorithm)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(tbs, ec.ECDSA(algorithm))
    raise CAError(f"unsupported CA key type {type(key).__name__}", code="signing_failed")


class IssuanceService:
    def __init__(self, db: Database, keys: KeyStore, clock: Clock, profiles: dict[str, Profile],
                 base_url: str, fault: Fault = _no_fault) -> None:
        self.db, self.keys, self.clock = db, keys, clock
        self.profiles, self.base_url, self.fault = profiles, base_url.rstrip("/"), fault
        # issue_batch: HSM signatures in this many threads (2 suits one process alone; the web
        # wiring sets GOVCA_SIGN_THREADS, 1 by default, for workers that share the CPUs).
        self.sign_threads = 2

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
                    self._reserve_many(s, [prep])
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
            [stored] = self._store_many(s, [(prep, der)])
        if isinstance(stored, CAError):
            raise stored
        return stored

    def issue_batch(self, reqs: list[IssueRequest],
                    finish: Callable[[object, list], None] | None = None,
                    ) -> list[Certificate | CAError]:
        """Several certificates with the same guarantees as `issue`, in fewer transactions:
        each request is checked, built and linted on its own (a bad one fails alone and burns
        no serial); the serials of all good ones are reserved and their intents audited in one
        transaction; each is signed and checked; all signed ones are stored and audited in one
        transaction. The result has one entry per request: the certificate or the error.
        `finish(session, result)`: the caller's own writes about the result (e.g. the states
        of the requests it carries out), made in the storing transaction, so that they commit
        or fail together with the certificates."""
        out: list[Certificate | CAError | None] = [None] * len(reqs)
        preps: list[tuple[int, _Prepared]] = []
        for i, item in enumerate(self._prepare_many(reqs)):
            if isinstance(item, CAError):
                out[i] = item
            else:
                preps.append((i, item))
        signed: list[tuple[int, _Prepared, bytes]] = []
        if preps:
            try:
                with self.db.transaction() as s:
                    self._reserve_many(s, [prep for _i, prep in preps])
            except sa_exc.IntegrityError:  # a serial collision: nothing was reserved
                log.warning("serial collision in a batch; issuing its requests one by one")
                for i, prep in preps:
                    try:
                        out[i] = self.issue(prep.req)
                    except CAError as exc:
                        out[i] = exc
                preps = []
            else:
                self.fault("after_reserve")
                for (i, prep), result in zip(preps, self._sign_all([p for _i, p in preps])):
                    if isinstance(result, CAError):
                        out[i] = result
                    else:
                        signed.append((i, prep, result))
        if signed or finish is not None:
            with self.db.transaction() as s:
                if signed:
                    stored = self._store_many(s, [(prep, der) for _i, prep, der in signed])
                    for (i, _prep, _der), result in zip(signed, stored):
                        out[i] = result  # a Conflict when recovery abandoned it meanwhile
                if finish is not None:
                    finish(s, out)
            if signed:
                self.fault("after_store")  # stored, but the caller has not heard of it yet
        return out  # type: ignore[return-value]

    # -- the steps ---------------------------------------------------------------------------
    def _prepare(self, req: IssueRequest) -> "_Prepared":
        """Steps 1-3: everything that can refuse a request before a serial is used."""
        [prep] = self._prepare_many([req])
        if isinstance(prep, CAError):
            raise prep
        return prep

    def _prepare_many(self, reqs: list[IssueRequest]) -> list["_Prepared | CAError"]:
        """Steps 1-3 for several requests: step 2 reads what all of them need in one read
        transaction with a few set-based queries (`_Reads`), then checks each on its own."""
        out: list = []
        for req in reqs:
            try:
                out.append(self._parse(req))
            except CAError as exc:
                out.append(exc)
        now = _seconds(self.clock.now())
        todo = [i for i, item in enumerate(out) if not isinstance(item, CAError)]
        if todo:
            with self.db.read() as s:  # beside the SQLite writer, not behind it
                reads = _Reads(s)
                reads.load_cas({reqs[i].ca for i in todo})
                reads.load_reused([reqs[i] for i in todo])
                keyed: list[int] = []
                for i in todo:  # the CA and the key first (a re-certified key is read here)
                    try:
                        out[i] = (out[i][0], self._key(s, reads, reqs[i], out[i][0],
                                                       out[i][1]))
                        keyed.append(i)
                    except CAError as exc:
                        out[i] = exc
                reads.load_holders([reqs[i] for i in keyed], [out[i][1] for i in keyed])
                for i in keyed:
                    try:
                        out[i] = self._read(reads, reqs[i], out[i][0], out[i][1], now)
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
            return profile, (parse_stored_csr(req.csr) if req.csr_stored else parse_csr(req.csr))
        if req.csr is not None:
            raise InvalidInput("give either a CSR or the certificate whose key is re-certified, "
                               "not both", field="csr")
        return profile, None

    def _key(self, s, reads: "_Reads", req: IssueRequest, profile: Profile, parsed):
        """2a. The CA can issue; the key (from the CSR or re-certified) fits the profile."""
        ca = reads.cas.get(req.ca)
        if ca is None:
            raise NotFound(f"no CA named {req.ca!r}", field="ca")
        if ca.status != "active":
            raise PolicyViolation(f"CA {ca.name!r} is {ca.status} and issues nothing", field="ca")
        if req.reuse_key_serial is not None:
            parsed = self._reused_key(reads, req, ca)
        check_csr_key(parsed, profile.key_types)
        return parsed

    def _read(self, reads: "_Reads", req: IssueRequest, profile: Profile, parsed,
              now) -> "_Prepared":
        """2b. Profile: subject from registered data, validity, duplicate keys."""
        ca = reads.cas[req.ca]
        subject, email, subscriber_id, domain_id = self._subject(reads, req, profile)
        org_version_id = reads.org_version_id(subscriber_id)
        not_after = self._not_after(req, profile, ca, now)
        self._check_duplicate_key(reads, parsed.spki_sha256, subscriber_id, profile)
        issuer = ca_view(ca, self.base_url)
        ca_spec = KeySpec(ca.key_type, ca.key_spec)
        name = build_name(subject)
        dns = tuple(clean_dns_name(d) for d in req.dns_names) if profile.dns_in_san else ()
        if profile.dns_in_san and not dns:
            raise InvalidInput("a TLS server certificate needs at least one DNS name",
                               field="dns_names")
        return _Prepared(req=req, profile=profile, now=now, name=name,
                         subject_text=name_text(subject), public_key=parsed.public_key,
                         spki_sha256=parsed.spki_sha256, email=email, dns=dns,
                         not_after=not_after, subscriber_id=subscriber_id, domain_id=domain_id,
                         org_version_id=org_version_id, issuer=issuer, ca_spec=ca_spec,
                         opts=sign_options(ca_spec, ca.signature_scheme, ca.hash_algorithm),
                         ca_id=ca.id, ca_name=ca.name, ca_key_id=ca.key_id,
                         ca_label=ca.key_label)

    def _build_and_lint(self, prep: "_Prepared") -> None:
        """3. Build, sign a linting copy with a throwaway key of the same shape, lint it; or,
        for a shape whose template was learned from such a certificate (template.py),
        assemble the TBS from the template after the checks of its varying values."""
        prep.serial = serials.generate()
        shape = TEMPLATES.shape(prep)
        tpl = TEMPLATES.get(shape)
        if tpl is not None:
            san = [("email" if tag == 0x81 else "domain", value)
                   for tag, value in san_values(prep.email, prep.dns, prep.profile)]
            errors = value_findings(prep.serial, prep.name, san)
            if errors:
                raise LintFailed("the certificate failed the linter; nothing was signed: "
                                 + "; ".join(errors), errors)
            tbs = TEMPLATES.assemble(shape, tpl, prep, lambda: self._linted(prep)[0])
            if tbs is not None:
                prep.tbs, prep.sig_alg = tbs, tpl.sig_alg
                return
        prep.tbs, prep.sig_alg = self._linted(prep)
        TEMPLATES.learn(shape, prep, prep.tbs, prep.sig_alg)

    def _linted(self, prep: "_Prepared") -> tuple[bytes, bytes]:
        """The builder's certificate for `prep`, through the whole lint gate: (TBS, the
        signatureAlgorithm TLV)."""
        prep.builder = build(prep.profile, prep.issuer, CertificateContent(
            subject=prep.name, public_key=prep.public_key, serial=prep.serial,
            not_before=prep.now, not_after=prep.not_after, email=prep.email,
            dns_names=prep.dns))
        linted = prep.builder.sign(lint_key(prep.ca_spec), **prep.opts)
        result = GATE.check(linted)  # pkilint per shape + per-certificate checks (lint.py)
        if not result.ok:
            raise LintFailed("the certificate failed the linter; nothing was signed: "
                             + "; ".join(result.errors), list(result.errors))
        tbs = linted.tbs_certificate_bytes
        return tbs, _signature_algorithm_der(linted.public_bytes(serialization.Encoding.DER),
                                             tbs)

    def _reserve_many(self, s, preps: list["_Prepared"]) -> None:
        """4. The reserved rows (one multi-row INSERT ... RETURNING id) and the audited intents
        (one audit.record_many), in the caller's transaction."""
        for prep in preps:
            prep.row = dict(ca_id=prep.ca_id, serial=serials.to_hex(prep.serial),
                            state="reserved", subscriber_id=prep.subscriber_id,
                            profile=prep.profile.name, subject=prep.subject_text,
                            not_before=prep.now, not_after=prep.not_after,
                            spki_sha256=prep.spki_sha256,
                            tbs_sha256=hashlib.sha256(prep.tbs).hexdigest(),
                            reserved_at=prep.now, organization_version_id=prep.org_version_id)
        table = Certificate.__table__
        conn = s.connection()
        ids = next_ids(s, table, len(preps))
        if ids is not None:  # SQLite: one executemany with the ids it would give
            conn.execute(insert(table), [{**p.row, "id": i} for p, i in zip(preps, ids)])
        elif len(preps) == 1:
            ids = [conn.execute(insert(table).values(**preps[0].row)
                                .returning(table.c.id)).scalar_one()]
        else:
            ids = conn.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True),
                               [p.row for p in preps]).scalars().all()
        if len(ids) != len(preps):  # pragma: no cover - the driver lost rows
            raise CAError("the database did not return every reserved row", code="db_error")
        for prep, row_id in zip(preps, ids):
            prep.row_id = row_id
        audit.record_many(s, [audit.Entry(
            "cert.issue.intent", actor=p.req.actor, at=p.now,
            target=f"{p.ca_name}:{p.row['serial']}", domain_id=p.domain_id,
            details={"profile": p.profile.name, "subject": p.subject_text,
                     "subscriber_id": p.subscriber_id, "not_after": p.not_after.isoformat(),
                     **p.req.details}) for p in preps])

    def _sign_all(self, preps: list["_Prepared"]) -> list["bytes | CAError"]:
        """Step 5-6 for several reserved certificates, in `sign_threads` threads: python-pkcs11
        releases the GIL during C_Sign, so one thread's HSM signature overlaps another's
        Python work (assembling, checking). Each entry is the DER or the error (the serial is
        then marked failed). Any other exception (a fault injected by tests) is raised."""
        def one(prep):
            try:
                return self._sign(prep)
            except CAError as exc:
                return exc
        threads = min(self.sign_threads, len(preps))
        if threads <= 1:
            return [one(p) for p in preps]
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="govca-sign") as pool:
            return list(pool.map(one, preps))

    def _sign(self, prep: "_Prepared") -> bytes:
        """5. Sign in the HSM with no transaction open: the HSM signs the TBS that was linted,
        and the Certificate (RFC 5280 4.1: SEQUENCE of the TBS, the signatureAlgorithm of the
        linted copy, the signature as a BIT STRING) is assembled around it. 6. Check what came
        back: parsed again, its TBS is the linted one and its signature verifies with the CA's
        public key. On any error the reserved serial is marked failed (never released) and the
        error raised."""
        try:
            key = self.keys.load(bytes.fromhex(prep.ca_key_id), prep.ca_label)
            signature = _hsm_sign(key, prep.tbs, prep.opts)
            der = der_tlv(0x30, prep.tbs + prep.sig_alg + der_tlv(0x03, b"\x00" + signature))
            self.fault("after_sign")
            try:
                signed = x509.load_der_x509_certificate(der)
            except ValueError:
                raise IntegrityError("the signed certificate could not be parsed") from None
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
        return der

    def _store_many(self, s, signed: list[tuple["_Prepared", bytes]],
                    ) -> list["Certificate | Conflict"]:
        """7. Store the certificates and audit success, in the caller's transaction: one
        locking read of which reservations are still live, one executemany UPDATE, one
        audit.record_many. A reservation that recovery abandoned meanwhile is not stored (its
        entry is a Conflict). Returns detached Certificates holding what was written."""
        issued_at = _seconds(self.clock.now())
        table = Certificate.__table__
        conn = s.connection()
        live = set(conn.execute(select(table.c.id).where(
            table.c.id.in_([p.row_id for p, _der in signed]), table.c.state == "reserved")
            .with_for_update()).scalars())
        out: list = []
        params: list[dict] = []
        events: list[audit.Entry] = []
        for prep, der in signed:
            if prep.row_id not in live:  # recovery abandoned it meanwhile: never released
                out.append(Conflict(f"serial {prep.row['serial']} was abandoned by recovery "
                                    f"while it was being signed; nothing was issued",
                                    code="reservation_abandoned"))
                continue
            fingerprint = hashlib.sha256(der).hexdigest()
            params.append({"b_id": prep.row_id, "b_der": der, "b_fp": fingerprint})
            events.append(audit.Entry(
                "cert.issue", actor=prep.req.actor, at=issued_at,
                target=f"{prep.ca_name}:{prep.row['serial']}", domain_id=prep.domain_id,
                details={"profile": prep.profile.name, "fingerprint": fingerprint,
                         "subscriber_id": prep.subscriber_id, **prep.req.details}))
            out.append(Certificate(id=prep.row_id, **{
                **prep.row, "der": der, "state": "issued", "issued_at": issued_at,
                "fingerprint_sha256": fingerprint}))
        if params:
            stored = conn.execute(update(table).where(
                table.c.id == bindparam("b_id"), table.c.state == "reserved").values(
                der=bindparam("b_der"), state="issued", issued_at=issued_at,
                fingerprint_sha256=bindparam("b_fp")), params)
            if stored.rowcount not in (-1, len(params)) and (
                    len(params) == 1 or conn.dialect.supports_sane_multi_rowcount):
                # Cannot happen under the row locks above; if it did, store nothing (the
                # reservations stay reserved and recovery marks them never released).
                raise CAError("the reserved rows changed while they were being stored; "
                              "nothing was issued", code="reservation_abandoned")
            audit.record_many(s, events)
        return out

    def _fail(self, row_id: int, actor: str, now: dt.datetime, exc: CAError) -> None:
        with self.db.transaction() as s:
            row = s.get(Certificate, row_id)
            row.state = "failed"
            row.failure_reason = f"{exc.code}: {exc.message}"
            audit.record(s, "cert.issue.failed", actor=actor, at=_seconds(self.clock.now()),
                         target=f"{row.ca.name}:{row.serial}",
                         details={"error": exc.code, "message": exc.message})

    # -- step 2 pieces -----------------------------------------------------------------------
    def _reused_key(self, reads: "_Reads", req: IssueRequest, ca) -> CertifiedKey:
        """The public key of an earlier certificate of the same subscriber from this CA (read
        for the whole batch by `_Reads.load_reused`)."""
        try:
            serial_hex = serials.to_hex(serials.parse(str(req.reuse_key_serial)))
        except ValueError as exc:
            raise InvalidInput(str(exc), field="serial") from None
        old = reads.reused.get((ca.id, serial_hex))
        if old is None or old.state != "issued" or old.der is None:
            raise NotFound(f"no issued certificate {req.reuse_key_serial} on CA {ca.name!r}",
                           field="serial")
        if req.subscriber_id is None or old.subscriber_id != req.subscriber_id:
            raise PolicyViolation("only the holder's own key can be certified again",
                                  field="serial", code="not_holder_key")
        public_key = x509.load_der_x509_certificate(old.der).public_key()
        return CertifiedKey(public_key=public_key, key_spec=describe(public_key),
                            spki_sha256=old.spki_sha256)

    def _subject(self, reads: "_Reads", req: IssueRequest, profile: Profile):
        if profile.subject in ("person", "organization"):
            if req.subscriber_id is None:
                raise InvalidInput(f"profile {profile.name!r} needs a registered subscriber",
                                   field="subscriber")
            sub = reads.subs.get(req.subscriber_id)
            if sub is None:
                raise NotFound(f"no subscriber with id {req.subscriber_id}", field="subscriber")
            if sub.kind != profile.subject:
                raise PolicyViolation(f"profile {profile.name!r} is for {profile.subject} "
                                      f"subscribers; subscriber {sub.id} is a {sub.kind}",
                                      field="profile")
            email = clean_email(sub.email) if sub.email and profile.email_in_san else sub.email
            subject = subject_from_chain(sub.kind, sub.full_name,
                                         reads.localities.get(sub.domain_id),
                                         chain_from(reads.orgs, sub.organization_id))
            return subject, email, sub.id, sub.domain_id
        if req.subject is None:
            raise InvalidInput(f"profile {profile.name!r} needs an explicit subject",
                               field="subject")
        email = clean_email(req.email) if req.email else None
        sub_id = req.subscriber_id
        domain_id = None
        if sub_id is not None:
            sub = reads.subs.get(sub_id)
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

    def _check_duplicate_key(self, reads: "_Reads", spki: str, subscriber_id: int | None,
                             profile: Profile) -> None:
        if spki in reads.ca_spkis:
            raise PolicyViolation("the CSR's public key is a CA key; it cannot be certified "
                                  "again", field="csr", code="ca_key_reuse")
        if profile.allow_duplicate_key:
            return
        other = reads.holders.get(spki, ())
        if any(o != subscriber_id or subscriber_id is None for o in other):
            raise PolicyViolation("this public key is already certified for another holder; "
                                  "generate a new key pair", field="csr", code="duplicate_key")


class _Reads:
    """Step 2's reads for a batch of requests, as Core queries over sets of ids in one read
    transaction: the CAs, the subscribers with their domains' localities, the organisation
    trees (one query per tree level), the current organisation versions, and the holders of the
    requests' public keys (issued or reserved certificates, CA keys). Rows, not ORM objects."""

    def __init__(self, s) -> None:
        self.conn = s.connection()
        self.cas: dict[str, object] = {}
        self.subs: dict[int, object] = {}
        self.localities: dict[int, str | None] = {}
        self.orgs: dict[int, object] = {}
        self.versions: dict[int, int] = {}
        self.ca_spkis: set[str] = set()
        self.holders: dict[str, list[int | None]] = {}
        self.reused: dict[tuple[int, str], object] = {}

    def load_cas(self, names) -> None:
        t = CertificateAuthority.__table__
        for chunk in in_chunks(names):
            for row in self.conn.execute(select(t).where(t.c.name.in_(chunk))):
                self.cas[row.name] = row

    def load_reused(self, reqs: list[IssueRequest]) -> None:
        """The earlier certificates whose keys `reqs` certify again (reuse_key_serial), by (CA
        id, hex serial); a serial that does not parse is left to `_reused_key` to refuse."""
        wanted: dict[int, set[str]] = {}
        for req in reqs:
            ca = self.cas.get(req.ca)
            if req.reuse_key_serial is None or ca is None:
                continue
            try:
                wanted.setdefault(ca.id, set()).add(
                    serials.to_hex(serials.parse(str(req.reuse_key_serial))))
            except ValueError:
                continue
        t = Certificate.__table__
        for ca_id, serial_set in wanted.items():
            for chunk in in_chunks(serial_set):
                for row in self.conn.execute(
                        select(t.c.ca_id, t.c.serial, t.c.state, t.c.der, t.c.subscriber_id,
                               t.c.spki_sha256).where(t.c.ca_id == ca_id,
                                                      t.c.serial.in_(chunk))):
                    self.reused[(row.ca_id, row.serial)] = row

    def load_holders(self, reqs: list[IssueRequest], keys: list) -> None:
        """The subscribers, organisations and versions of `reqs`, the holders of `keys`."""
        conn = self.conn
        st, dt_, ot = Subscriber.__table__, RaDomain.__table__, Organization.__table__
        vt, ct, cat = (OrganizationVersion.__table__, Certificate.__table__,
                       CertificateAuthority.__table__)
        for chunk in in_chunks({r.subscriber_id for r in reqs if r.subscriber_id is not None}):
            for row in conn.execute(select(st.c.id, st.c.kind, st.c.domain_id,
                                           st.c.organization_id, st.c.full_name, st.c.email)
                                    .where(st.c.id.in_(chunk))):
                self.subs[row.id] = row
        for chunk in in_chunks({s.domain_id for s in self.subs.values()}):
            for dom_id, locality in conn.execute(select(dt_.c.id, dt_.c.locality)
                                                 .where(dt_.c.id.in_(chunk))):
                self.localities[dom_id] = locality
        wanted = {s.organization_id for s in self.subs.values()}
        own = set(wanted)
        while wanted:  # one query per level of the trees, upwards
            for chunk in in_chunks(wanted):
                for row in conn.execute(select(ot.c.id, ot.c.parent_id, ot.c.kind, ot.c.name)
                                        .where(ot.c.id.in_(chunk))):
                    self.orgs[row.id] = row
            wanted = {o.parent_id for o in self.orgs.values()
                      if o.parent_id is not None and o.parent_id not in self.orgs} - wanted
        best: dict[int, tuple[int, int]] = {}
        for chunk in in_chunks(own):
            for org_id, ver_id, version in conn.execute(
                    select(vt.c.organization_id, vt.c.id, vt.c.version)
                    .where(vt.c.organization_id.in_(chunk))):
                if org_id not in best or version > best[org_id][0]:
                    best[org_id] = (version, ver_id)
        self.versions = {org_id: ver_id for org_id, (_v, ver_id) in best.items()}
        spkis = {k.spki_sha256 for k in keys}
        for chunk in in_chunks(spkis):
            self.ca_spkis.update(conn.execute(select(cat.c.spki_sha256)
                                              .where(cat.c.spki_sha256.in_(chunk))).scalars())
            for spki, holder in conn.execute(select(ct.c.spki_sha256, ct.c.subscriber_id).where(
                    ct.c.spki_sha256.in_(chunk), ct.c.state.in_(("issued", "reserved")))):
                self.holders.setdefault(spki, []).append(holder)

    def org_version_id(self, subscriber_id: int | None) -> int | None:
        """`models_org.subscriber_org_version_id` over the rows read."""
        sub = self.subs.get(subscriber_id) if subscriber_id is not None else None
        return self.versions.get(sub.organization_id) if sub is not None else None


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
