"""Key ceremonies: a root CA (self-signed) and an issuing CA signed by its parent, keys
generated in the HSM. Idempotent: an existing CA is returned unless `force` replaces it."""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from ca import audit, serial as serials
from ca.clock import Clock
from ca.errors import Conflict, LintFailed, NotFound, PolicyViolation
from ca.issuance.builder import CertificateContent, build
from ca.issuance.lint import lint_certificate
from ca.issuance.service import ca_view
from ca.issuance.signing import SCHEMES, check_signed, lint_key, sign_options
from ca.keys import KeySpec, spki_sha256
from ca.names import SubjectData, build_name
from ca.ports import KeyStore
from ca.profiles.model import Profile
from ca.store.database import Database
from ca.store.models import Certificate, CertificateAuthority

ROOT_PROFILE = Profile(
    name="root", description="self-signed root CA", category="ca", subject="ca",
    key_usage=frozenset({"keyCertSign", "cRLSign"}), extended_key_usage=(),
    key_types={"rsa": ("2048", "3072", "4096"), "ec": ("secp256r1", "secp384r1")},
    validity_days=7305, max_validity_days=7305)


@dataclass(frozen=True)
class CeremonyResult:
    ca: CertificateAuthority
    created: bool


@dataclass(frozen=True)
class CAParameters:
    name: str
    subject: SubjectData
    key_spec: KeySpec
    scheme: str = "pkcs1v15"
    hash_algorithm: str = "sha256"
    validity_days: int = 7305
    crl_interval_seconds: int = 86400
    crl_validity_seconds: int = 7 * 86400


class Ceremony:
    def __init__(self, db: Database, keys: KeyStore, clock: Clock, base_url: str,
                 actor: str = "operator:cli") -> None:
        self.db, self.keys, self.clock, self.base_url, self.actor = db, keys, clock, base_url, actor

    def init_root(self, params: CAParameters, *, force: bool = False) -> CeremonyResult:
        return self._run(params, parent_name=None, profile=ROOT_PROFILE, force=force)

    def init_issuing(self, params: CAParameters, parent: str, profile: Profile, *,
                     force: bool = False) -> CeremonyResult:
        return self._run(params, parent_name=parent, profile=profile, force=force)

    def _run(self, params: CAParameters, parent_name: str | None, profile: Profile,
             force: bool) -> CeremonyResult:
        scheme = "ecdsa" if params.key_spec.type == "ec" else params.scheme
        if scheme not in SCHEMES or (params.key_spec.type == "rsa" and scheme == "ecdsa"):
            raise PolicyViolation(f"signature scheme {params.scheme!r} does not fit "
                                  f"{params.key_spec}", field="signature")
        if params.validity_days < 1:
            raise PolicyViolation("a CA certificate must be valid for at least one day",
                                  field="validity_days")
        if params.validity_days > profile.max_validity_days:
            raise PolicyViolation(f"a CA certificate is valid at most {profile.max_validity_days}"
                                  f" days", field="validity_days")
        build_name(params.subject)  # a bad subject fails here, before any key is generated
        now = self.clock.now().replace(microsecond=0)
        with self.db.transaction() as s:
            existing = s.execute(select(CertificateAuthority).where(
                CertificateAuthority.name == params.name)).scalar_one_or_none()
            if existing is not None and not force:
                return CeremonyResult(existing, created=False)
            parent = None
            if parent_name is not None:
                parent = s.execute(select(CertificateAuthority).where(
                    CertificateAuthority.name == parent_name)).scalar_one_or_none()
                if parent is None:
                    raise NotFound(f"the parent CA {parent_name!r} does not exist; run "
                                   f"`govca ca init-root` first", field="parent")
                if parent.status != "active":
                    raise PolicyViolation(f"the parent CA {parent_name!r} is {parent.status}")
                if parent.not_after <= now:
                    raise PolicyViolation(f"the parent CA {parent_name!r} has expired",
                                          field="parent")

        # The key is generated in the HSM; from here on failures destroy it again.
        label = f"govca-{params.name}-{now:%Y%m%d%H%M%S}"
        key = self.keys.generate(params.key_spec, label)
        try:
            return self._certify(params, parent, profile, key, label, scheme, now, force)
        except BaseException:
            self.keys.destroy(key.key_id)
            raise

    def _certify(self, params, parent, profile, key, label, scheme, now, force) -> CeremonyResult:
        name = build_name(params.subject)
        not_after = now + dt.timedelta(days=params.validity_days)
        issuer = None
        if parent is not None:
            issuer = ca_view(parent, self.base_url)
            not_after = min(not_after, parent.not_after)
            signer_spec = KeySpec(parent.key_type, parent.key_spec)
            opts = sign_options(signer_spec, parent.signature_scheme, parent.hash_algorithm)
            signer = self.keys.load(bytes.fromhex(parent.key_id), parent.key_label)
            signer_public = issuer.certificate.public_key()
        else:
            signer_spec = params.key_spec
            opts = sign_options(params.key_spec, scheme, params.hash_algorithm)
            signer, signer_public = key, key.public_key()
        serial = serials.generate()
        builder = build(profile, issuer, CertificateContent(
            subject=name, public_key=key.public_key(), serial=serial, not_before=now,
            not_after=not_after))
        # Lint a copy signed by a throwaway key of the signer's shape, then sign for real and
        # check that the HSM signed the same TBS.
        linted = builder.sign(lint_key(signer_spec), **opts)
        result = lint_certificate(linted.public_bytes(serialization.Encoding.DER))
        if not result.ok:
            raise LintFailed("the CA certificate failed the linter: " + "; ".join(result.errors),
                             list(result.errors))
        cert = builder.sign(signer, **opts)
        check_signed(cert, linted.tbs_certificate_bytes, signer_public)
        der = cert.public_bytes(serialization.Encoding.DER)

        with self.db.transaction() as s:
            existing = s.execute(select(CertificateAuthority).where(
                CertificateAuthority.name == params.name)).scalar_one_or_none()
            if existing is not None:
                if not force:
                    raise Conflict(f"CA {params.name!r} was created meanwhile")
                old_name = existing.name
                existing.name = f"{old_name}-retired-{now:%Y%m%d%H%M%S}"
                existing.status = "retired"
                s.flush()
                audit.record(s, "ca.retire", actor=self.actor, at=now, target=old_name,
                             details={"renamed_to": existing.name})
            ca = CertificateAuthority(
                name=params.name, parent_id=parent.id if parent else None,
                subject=name.rfc4514_string(), certificate_der=der,
                serial=serials.to_hex(serial), key_label=label, key_id=key.key_id.hex(),
                key_type=params.key_spec.type, key_spec=params.key_spec.spec,
                signature_scheme=scheme, hash_algorithm=params.hash_algorithm,
                spki_sha256=spki_sha256(key.public_key()), not_before=now, not_after=not_after,
                crl_interval_seconds=params.crl_interval_seconds,
                crl_validity_seconds=params.crl_validity_seconds, created_at=now)
            s.add(ca)
            s.flush()
            if parent is not None:
                s.add(Certificate(
                    ca_id=parent.id, serial=serials.to_hex(serial), state="issued",
                    profile=profile.name, subject=ca.subject, not_before=now,
                    not_after=not_after, spki_sha256=ca.spki_sha256,
                    tbs_sha256=hashlib.sha256(cert.tbs_certificate_bytes).hexdigest(), der=der,
                    fingerprint_sha256=hashlib.sha256(der).hexdigest(), reserved_at=now,
                    issued_at=now))
            audit.record(s, "ca.init", actor=self.actor, at=now, target=params.name, details={
                "parent": parent.name if parent else None, "subject": ca.subject,
                "key": str(params.key_spec), "key_label": label, "key_id": ca.key_id,
                "signature": f"{scheme}-{params.hash_algorithm}", "serial": ca.serial,
                "not_after": not_after.isoformat(), "forced": bool(force)})
        return CeremonyResult(ca, created=True)


def certificate_of(ca: CertificateAuthority) -> x509.Certificate:
    return x509.load_der_x509_certificate(ca.certificate_der)
