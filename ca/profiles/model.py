"""Profile model and its load-time validation (a bad profile fails at start, not at use)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from ca.errors import ConfigurationError

KEY_USAGES = ("digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment",
              "keyAgreement", "keyCertSign", "cRLSign")
EKUS: dict[str, ObjectIdentifier] = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "OCSPSigning": ExtendedKeyUsageOID.OCSP_SIGNING,
    "timeStamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "documentSigning": ObjectIdentifier("1.3.6.1.5.5.7.3.36"),  # RFC 9336 id-kp-documentSigning
}
CATEGORIES = ("subscriber", "responder", "service", "ca")  # service: GovCA's own (audit)
SUBJECT_KINDS = ("person", "organization", "device", "responder", "ca")
# DOMAIN.md: subscriber certificates at most 5 years when new; CA certificates at most 20 years.
MAX_DAYS = {"subscriber": 1826, "responder": 1826, "service": 1826, "ca": 7305}
ALLOWED_KEYS = {"rsa": ("2048", "3072", "4096"), "ec": ("secp256r1", "secp384r1")}


class ProfileError(ConfigurationError):
    code = "profile_invalid"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    category: str
    subject: str
    key_usage: frozenset[str]
    extended_key_usage: tuple[str, ...]
    key_types: dict[str, tuple[str, ...]] = field(hash=False)
    validity_days: int
    max_validity_days: int
    email_in_san: bool = False
    dns_in_san: bool = False
    central_approval: bool = False
    allow_duplicate_key: bool = False
    reuse_key_on_change: bool = False  # a change of information may keep the holder's key
    ocsp_nocheck: bool = False
    aia_ocsp: bool = True
    crl_distribution_point: bool = True
    path_length: int | None = None
    name_constraints_permitted_dn: str | None = None
    certificate_policies: tuple[str, ...] = ()

    @property
    def is_ca(self) -> bool:
        return self.category == "ca"

    def key_usage_extension(self) -> x509.KeyUsage:
        ku = self.key_usage
        return x509.KeyUsage(
            digital_signature="digitalSignature" in ku, content_commitment="nonRepudiation" in ku,
            key_encipherment="keyEncipherment" in ku, data_encipherment="dataEncipherment" in ku,
            key_agreement="keyAgreement" in ku, key_cert_sign="keyCertSign" in ku,
            crl_sign="cRLSign" in ku, encipher_only=False, decipher_only=False)

    def eku_oids(self) -> list[ObjectIdentifier]:
        return [EKUS[e] for e in self.extended_key_usage]


def _fail(name: str, message: str) -> ProfileError:
    return ProfileError(f"profile {name!r}: {message}", field=name)


def parse_profile(name: str, raw: dict[str, Any]) -> Profile:
    known = set(Profile.__dataclass_fields__) - {"name"}
    unknown = set(raw) - known
    if unknown:
        raise _fail(name, f"unknown settings {sorted(unknown)}")
    category = raw.get("category")
    if category not in CATEGORIES:
        raise _fail(name, f"category must be one of {CATEGORIES}")
    if raw.get("subject") not in SUBJECT_KINDS:
        raise _fail(name, f"subject must be one of {SUBJECT_KINDS}")
    ku = raw.get("key_usage") or []
    bad = [u for u in ku if u not in KEY_USAGES]
    if bad or not ku:
        raise _fail(name, f"key_usage must be a non-empty list of {KEY_USAGES} (bad: {bad})")
    eku = raw.get("extended_key_usage") or []
    bad = [e for e in eku if e not in EKUS]
    if bad:
        raise _fail(name, f"unknown extended key usages {bad}")
    is_ca_rights = "keyCertSign" in ku or "cRLSign" in ku
    if category == "ca" and "keyCertSign" not in ku:
        raise _fail(name, "a CA profile needs keyCertSign")
    if category != "ca" and is_ca_rights:
        raise _fail(name, "only CA profiles may carry keyCertSign or cRLSign")
    if category == "responder" and ("OCSPSigning" not in eku or not raw.get("ocsp_nocheck")):
        raise _fail(name, "a responder profile needs the OCSPSigning EKU and ocsp_nocheck")
    key_types = raw.get("key_types") or {}
    if not key_types:
        raise _fail(name, "key_types is required")
    for kt, specs in key_types.items():
        if kt not in ALLOWED_KEYS or not specs or any(s not in ALLOWED_KEYS[kt] for s in specs):
            raise _fail(name, f"key_types[{kt!r}] must be a subset of {ALLOWED_KEYS.get(kt)}")
    validity = raw.get("validity_days")
    cap = raw.get("max_validity_days", validity)
    if not isinstance(validity, int) or not isinstance(cap, int) or validity <= 0 or cap <= 0:
        raise _fail(name, "validity_days and max_validity_days must be positive integers")
    if validity > cap:
        raise _fail(name, "validity_days exceeds max_validity_days")
    if cap > MAX_DAYS[category]:
        raise _fail(name, f"max_validity_days {cap} exceeds the {category} limit of "
                          f"{MAX_DAYS[category]} days")
    path_length = raw.get("path_length")
    if path_length is not None and (category != "ca" or not isinstance(path_length, int)
                                    or path_length < 0):
        raise _fail(name, "path_length is only for CA profiles and must be >= 0")
    policies = tuple(raw.get("certificate_policies") or ())
    for oid in policies:
        try:
            ObjectIdentifier(oid)
        except ValueError:
            raise _fail(name, f"certificate policy {oid!r} is not an OID") from None
    return Profile(
        name=name, description=str(raw.get("description", "")), category=category,
        subject=raw["subject"], key_usage=frozenset(ku), extended_key_usage=tuple(eku),
        key_types={k: tuple(v) for k, v in key_types.items()}, validity_days=validity,
        max_validity_days=cap, email_in_san=bool(raw.get("email_in_san", False)),
        dns_in_san=bool(raw.get("dns_in_san", False)),
        central_approval=bool(raw.get("central_approval", False)),
        allow_duplicate_key=bool(raw.get("allow_duplicate_key", False)),
        reuse_key_on_change=bool(raw.get("reuse_key_on_change", False)),
        ocsp_nocheck=bool(raw.get("ocsp_nocheck", False)), aia_ocsp=bool(raw.get("aia_ocsp", True)),
        crl_distribution_point=bool(raw.get("crl_distribution_point", True)),
        path_length=path_length,
        name_constraints_permitted_dn=raw.get("name_constraints_permitted_dn"),
        certificate_policies=policies)


def load_profiles(raw: dict[str, dict[str, Any]]) -> dict[str, Profile]:
    if not isinstance(raw, dict) or not raw:
        raise ProfileError("the profile file must map profile names to settings")
    return {name: parse_profile(name, body) for name, body in raw.items()}


def builtin_profiles(override_file: str | Path | None = None) -> dict[str, Profile]:
    """The built-in profiles, with an operator's JSON file (if any) merged over them."""
    raw = json.loads(resources.files("ca.profiles").joinpath("builtin.json").read_text("utf-8"))
    if override_file and Path(override_file).exists():
        try:
            extra = json.loads(Path(override_file).read_text("utf-8"))
        except json.JSONDecodeError as exc:
            raise ProfileError(f"{override_file}: not valid JSON ({exc})") from None
        if not isinstance(extra, dict) or not all(isinstance(b, dict) for b in extra.values()):
            raise ProfileError(f"{override_file}: must map profile names to settings")
        for name, body in extra.items():
            raw[name] = {**raw.get(name, {}), **body}
    return load_profiles(raw)
