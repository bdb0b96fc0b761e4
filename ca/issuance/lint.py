"""pkilint (RFC 5280 certificate, CRL and OCSP validators) as a gate before release."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from pkilint import loader, report
from pkilint.pkix import certificate, extension, name
from pkilint.validation import ValidationFindingSeverity

BLOCKING = (ValidationFindingSeverity.FATAL, ValidationFindingSeverity.ERROR)


@dataclass(frozen=True)
class LintResult:
    errors: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


@functools.lru_cache(maxsize=1)
def _certificate_validator():
    return certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(name.ATTRIBUTE_TYPE_MAPPINGS,
                                               extension.EXTENSION_MAPPINGS),
        [certificate.create_issuer_validator_container([]),
         certificate.create_validity_validator_container(),
         certificate.create_subject_validator_container([]),
         certificate.create_extensions_validator_container([]),
         certificate.create_spki_validator_container([])])


def _collect(results) -> LintResult:
    errors: list[str] = []
    warnings: list[str] = []
    for result in results:
        for finding in result.finding_descriptions:
            text = f"{finding.finding.code}@{result.node.path}"
            if finding.message:
                text += f": {finding.message}"
            if finding.finding.severity in BLOCKING:
                errors.append(text)
            elif finding.finding.severity == ValidationFindingSeverity.WARNING:
                warnings.append(text)
    return LintResult(tuple(errors), tuple(warnings))


def lint_certificate(der: bytes) -> LintResult:
    doc = loader.load_der_certificate(der, "certificate")
    return _collect(_certificate_validator().validate(doc.root))


__all__ = ["LintResult", "lint_certificate", "report"]


# --- the release gate: pkilint once per certificate shape, cheap checks per certificate --------
#
# pkilint takes ~5 ms per certificate (decode with pyasn1 + ~100 validators), which alone would
# cap two cores near 400 certificates/s. Almost all of a GovCA certificate is fixed by its
# profile and CA: the issuer, the signature algorithm, every extension except the SKI and the
# SAN, the subject's *shape* (attribute types, their order and string types), the key type and
# size. `LintGate` runs the full pkilint on the first certificate of every such shape (the
# "template"), remembers that the shape passed, and for every later certificate of the same
# shape checks only what varies, with the same rules pkilint applies to those parts:
#   - subject attribute values: decoded with pkilint's own ASN.1 specs (ATTRIBUTE_TYPE_MAPPINGS:
#     upper bounds such as ub-common-name 64, countryName PrintableString SIZE(2), ...) and the
#     character sets of PrintableString / IA5String;
#   - SAN rfc822Name and dNSName values: the same `validators.email` / `validators.domain`
#     predicates pkilint's GeneralName syntax validators use;
#   - the SKI: the SHA-1 of this certificate's public key (RFC 5280 4.2.1.2 method 1);
#   - the serial number: positive and at most 20 octets (RFC 5280 4.1.2.2).
# Anything else that differs from a linted template (an extension's bytes or criticality, an
# attribute's string type, another key size, a validity crossing 2050, ...) makes a new shape,
# which goes through the full pkilint before it is cached. Subjects or SANs with types whose
# pkilint checks depend on the value in other ways (domainComponent, emailAddress, URIs, IPs,
# otherName, ...) are never cached: such certificates are fully linted every time.
# GovCA's own rule, applied to every certificate on both paths: subject DirectoryString values
# are UTF8String (RFC 5280 4.1.2.6) and countryName is PrintableString.
import collections
import threading

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtensionOID, NameOID

_CACHEABLE_ATTRS = {NameOID.COUNTRY_NAME, NameOID.STATE_OR_PROVINCE_NAME, NameOID.LOCALITY_NAME,
                    NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME,
                    NameOID.COMMON_NAME, NameOID.SERIAL_NUMBER, NameOID.TITLE,
                    NameOID.GIVEN_NAME, NameOID.SURNAME}
_DIRECTORY_STRING_ATTRS = {NameOID.STATE_OR_PROVINCE_NAME, NameOID.LOCALITY_NAME,
                           NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME,
                           NameOID.COMMON_NAME, NameOID.TITLE, NameOID.GIVEN_NAME,
                           NameOID.SURNAME}
_PRINTABLE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")
_CODECS = {_ASN1Type.UTF8String: "utf-8", _ASN1Type.PrintableString: "ascii",
           _ASN1Type.IA5String: "ascii", _ASN1Type.BMPString: "utf-16-be",
           _ASN1Type.UniversalString: "utf-32-be"}


def der_tlv(tag: int, content: bytes) -> bytes:
    """One DER TLV with a definite, minimal length (X.690 8.1.3)."""
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


@functools.lru_cache(maxsize=1)
def _attribute_specs():
    from pyasn1.type import univ
    return {str(k): v for k, v in name.ATTRIBUTE_TYPE_MAPPINGS.items()
            if isinstance(k, univ.ObjectIdentifier)}


def policy_findings(cert: x509.Certificate, subject: x509.Name | None = None) -> list[str]:
    """GovCA's rule on subject string types (both paths). `subject`: cert.subject if the
    caller already has it (cryptography parses it again on every access)."""
    out = []
    for attr in (cert.subject if subject is None else subject):
        if attr.oid in _DIRECTORY_STRING_ATTRS and attr._type != _ASN1Type.UTF8String:
            out.append(f"govca.directory_string_not_utf8string@subject.{attr.oid._name}: "
                       f"{attr._type.name} (RFC 5280 4.1.2.6: UTF8String)")
        if attr.oid == NameOID.COUNTRY_NAME and attr._type != _ASN1Type.PrintableString:
            out.append("govca.country_name_not_printablestring@subject.countryName")
    return out


def shape_key(cert: x509.Certificate, subject_name: x509.Name | None = None,
              pub=None) -> tuple | None:
    """Everything pkilint's verdict can depend on apart from the per-certificate values that
    `variable_findings` checks; None when the certificate must always be linted in full.
    (`subject_name`, `pub`: cert.subject and cert.public_key() if the caller has them.)"""
    subject = []
    for rdn in (cert.subject if subject_name is None else subject_name).rdns:
        attrs = []
        for a in rdn:
            if a.oid not in _CACHEABLE_ATTRS:
                return None
            attrs.append((a.oid.dotted_string, a._type.value))
        subject.append(tuple(attrs))
    if pub is None:
        pub = cert.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        spki = ("rsa", pub.key_size, pub.public_numbers().e)
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        spki = ("ec", pub.curve.name)
    else:
        return None
    exts = []
    for ext in cert.extensions:
        if ext.oid == ExtensionOID.SUBJECT_KEY_IDENTIFIER:
            exts.append((ext.oid.dotted_string, ext.critical, "ski"))
        elif ext.oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
            kinds = []
            for g in ext.value:
                if not isinstance(g, (x509.RFC822Name, x509.DNSName)):
                    return None
                kinds.append(type(g).__name__)
            exts.append((ext.oid.dotted_string, ext.critical, tuple(kinds)))
        else:
            exts.append((ext.oid.dotted_string, ext.critical, ext.value.public_bytes()))
    params = cert.signature_algorithm_parameters
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    return (cert.version.value, cert.signature_algorithm_oid.dotted_string,
            type(params).__name__, repr(getattr(params, "_salt_length", None)),
            cert.issuer.public_bytes(), tuple(subject), spki,
            (nb.year < 2050, na.year < 2050, nb < na), tuple(exts))


_VALUE_CACHE_MAX = 65536
_value_cache: dict[tuple, str | None] = {}  # (oid, string type, value) -> finding or None
_san_cache: dict[tuple, bool] = {}  # (kind, value) -> syntax ok


def _attribute_finding(oid: str, oid_name: str, asn1_type: _ASN1Type, value: str) -> str | None:
    """The finding of one subject attribute value (None if it passes); a pure function of its
    arguments, so `variable_findings` memoises it (bounded)."""
    from pyasn1.codec.der.decoder import decode
    where = f"subject.{oid_name}"
    if asn1_type == _ASN1Type.PrintableString and not set(value) <= _PRINTABLE:
        return f"pkix.invalid_printablestring_character@{where}"
    codec = _CODECS.get(asn1_type)
    if codec is None:
        return f"govca.unexpected_string_type@{where}: {asn1_type.name}"
    try:
        raw = der_tlv(asn1_type.value, value.encode(codec))
        spec = _attribute_specs().get(oid)
        if spec is None:
            raise ValueError("no ASN.1 spec")
        _decoded, rest = decode(raw, asn1Spec=spec)
        if rest:
            raise ValueError("trailing data")
    except Exception as exc:  # pyasn1 constraint/tag errors, encoding errors
        return (f"pkix.name_attribute_decoding_error@{where}: {type(exc).__name__}: "
                f"{str(exc)[:120]}")
    return None


def _san_ok(kind: str, value: str) -> bool:
    import validators
    key = (kind, value)
    ok = _san_cache.get(key)
    if ok is None:
        check = validators.email if kind == "email" else validators.domain
        ok = value.isascii() and check(value) is True
        if len(_san_cache) >= _VALUE_CACHE_MAX:
            _san_cache.clear()
        _san_cache[key] = ok
    return ok


def value_findings(serial: int, subject: x509.Name, san: list[tuple[str, str]]) -> list[str]:
    """The checks of the values that differ between certificates of one shape: the serial
    number's range, each subject attribute value, each SAN value ("email" or "domain", value).
    Used on a built certificate (variable_findings) and, before encoding, on the values of a
    certificate assembled from its template (template.py)."""
    out = []
    if not 0 < serial < 2 ** 159:
        out.append("govca.serial_number_out_of_range@tbsCertificate.serialNumber")
    for attr in subject:
        value = attr.value if isinstance(attr.value, str) else ""
        key = (attr.oid.dotted_string, attr._type, value)
        try:
            finding = _value_cache[key]
        except KeyError:
            finding = _attribute_finding(key[0], attr.oid._name, attr._type, value)
            if len(_value_cache) >= _VALUE_CACHE_MAX:
                _value_cache.clear()
            _value_cache[key] = finding
        if finding is not None:
            out.append(finding)
    for kind, value in san:
        if not _san_ok(kind, value):
            what = "email_address" if kind == "email" else "domain_name"
            out.append(f"pkix.invalid_{what}_syntax@subjectAltName: {value!r}")
    return out


def variable_findings(cert: x509.Certificate, subject: x509.Name | None = None,
                      pub=None) -> list[str]:
    """The checks of the parts that differ between certificates of one shape. (`subject`,
    `pub`: cert.subject and cert.public_key() if the caller has them.)"""
    try:
        san_ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san_ext = []
    san = [("email" if isinstance(g, x509.RFC822Name) else "domain", g.value) for g in san_ext
           if isinstance(g, (x509.RFC822Name, x509.DNSName))]
    out = value_findings(cert.serial_number, cert.subject if subject is None else subject, san)
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        if pub is None:
            pub = cert.public_key()
        if ski.digest != x509.SubjectKeyIdentifier.from_public_key(pub).digest:
            out.append("govca.ski_not_key_hash@subjectKeyIdentifier")
    except x509.ExtensionNotFound:
        pass
    return out


class LintGate:
    """pkilint per certificate shape + per-certificate checks of the variable parts (see above).
    Thread-safe; a bounded LRU of shapes that passed."""

    def __init__(self, maxsize: int = 4096) -> None:
        self.maxsize = maxsize
        self._passed: collections.OrderedDict[tuple, tuple[str, ...]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.full_lints = 0
        self.cached_checks = 0

    def clear(self) -> None:
        with self._lock:
            self._passed.clear()

    def check(self, cert: x509.Certificate) -> LintResult:
        subject, pub = cert.subject, cert.public_key()
        errors = policy_findings(cert, subject) + variable_findings(cert, subject, pub)
        if errors:
            return LintResult(tuple(errors), ())
        key = shape_key(cert, subject, pub)
        if key is not None:
            with self._lock:
                warnings = self._passed.get(key)
                if warnings is not None:
                    self._passed.move_to_end(key)
                    self.cached_checks += 1
                    return LintResult((), warnings)
        result = lint_certificate(cert.public_bytes(serialization.Encoding.DER))
        with self._lock:
            self.full_lints += 1
            if result.ok and key is not None:
                self._passed[key] = result.warnings
                while len(self._passed) > self.maxsize:
                    self._passed.popitem(last=False)
        return result


GATE = LintGate()
__all__ += ["LintGate", "GATE", "shape_key", "variable_findings", "value_findings",
            "policy_findings"]
