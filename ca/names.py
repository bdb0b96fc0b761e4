"""Vietnamese text as certificate data: NFC, no control characters, RFC 5280 bounds in characters."""
from __future__ import annotations

import functools
import unicodedata
import warnings
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import NameOID

from ca.errors import InvalidInput

# RFC 5280 Appendix A upper bounds, counted in characters.
UB_COMMON_NAME = 64
UB_LOCALITY_NAME = 128
UB_ORGANIZATION_NAME = 64
UB_ORGANIZATIONAL_UNIT_NAME = 64
UB_EMAIL = 255


def clean_text(value: str, *, field_name: str, max_chars: int, required: bool = True) -> str:
    """NFC-normalise, trim and collapse inner whitespace; refuse control and format characters
    (including bidi overrides) and text longer than `max_chars` characters."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"{field_name} must be text", field=field_name)
    text = unicodedata.normalize("NFC", value)
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Co", "Cn") or cat in ("Zl", "Zp"):
            raise InvalidInput(f"{field_name} contains a control or invisible character "
                               f"(U+{ord(ch):04X})", field=field_name, code="control_character")
    text = " ".join(text.split())
    if required and not text:
        raise InvalidInput(f"{field_name} is required", field=field_name, code="required")
    if len(text) > max_chars:
        raise InvalidInput(f"{field_name} is {len(text)} characters long; at most {max_chars} "
                           f"are allowed", field=field_name, code="too_long")
    return text


def clean_ascii(value: str, *, field_name: str, max_chars: int, hint: str = "") -> str:
    """E-mail addresses and DNS names go into IA5String fields (RFC 5280 4.2.1.6): ASCII only.
    Their finer syntax is left to pkilint, which checks it before anything is signed."""
    text = (value or "").strip() if isinstance(value, str) else None
    if text is None:
        raise InvalidInput(f"{field_name} must be text", field=field_name)
    if not text:
        raise InvalidInput(f"{field_name} is required", field=field_name, code="required")
    if not text.isascii():
        raise InvalidInput(f"{field_name} must be ASCII{hint}", field=field_name,
                           code="not_ascii")
    if not text.isprintable():
        raise InvalidInput(f"{field_name} contains a control character", field=field_name,
                           code="control_character")
    if len(text) > max_chars:
        raise InvalidInput(f"{field_name} is {len(text)} characters long; at most {max_chars} "
                           f"are allowed", field=field_name, code="too_long")
    return text


def clean_email(value: str) -> str:
    return clean_ascii(value, field_name="the e-mail address", max_chars=UB_EMAIL,
                       hint=" (RFC 5280 4.2.1.6: an rfc822Name is an IA5String)")


def clean_dns_name(value: str) -> str:
    # RFC 1035 2.3.4: at most 253 characters in text form.
    return clean_ascii(value, field_name="the DNS name", max_chars=253,
                       hint="; give an internationalised domain in its xn-- (A-label) form"
                       ).lower()


def fold(text: str) -> str:
    """Search key: lowercase without diacritics ('Nguyễn' -> 'nguyen', 'Đ' -> 'd')."""
    decomposed = unicodedata.normalize("NFD", text.replace("Đ", "D").replace("đ", "d"))
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn").lower()


def _attr(oid: x509.ObjectIdentifier, value: str) -> x509.NameAttribute:
    # cryptography bounds CN by 64 UTF-8 *bytes*; RFC 5280 bounds it by 64 *characters*.
    # Lengths were checked in characters by clean_text, so its byte check is skipped here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return x509.NameAttribute(oid, value, _validate=False)


@dataclass(frozen=True)
class SubjectData:
    """What goes into a subscriber's DN: C=VN, L=province, O=agency, OU=unit(s), CN=name."""

    common_name: str
    locality: str | None = None
    organization: str | None = None
    organizational_units: tuple[str, ...] = field(default_factory=tuple)
    country: str = "VN"

    def cleaned(self) -> "SubjectData":
        if len(self.country) != 2 or not self.country.isascii() or not self.country.isalpha():
            raise InvalidInput("country must be a two-letter code", field="country")
        return SubjectData(
            common_name=clean_text(self.common_name, field_name="common name",
                                   max_chars=UB_COMMON_NAME),
            locality=(clean_text(self.locality, field_name="locality", max_chars=UB_LOCALITY_NAME)
                      if self.locality else None),
            organization=(clean_text(self.organization, field_name="organization",
                                     max_chars=UB_ORGANIZATION_NAME) if self.organization else None),
            organizational_units=tuple(
                clean_text(u, field_name="organizational unit", max_chars=UB_ORGANIZATIONAL_UNIT_NAME)
                for u in self.organizational_units if u),
            country=self.country.upper(),
        )


def build_name(data: SubjectData) -> x509.Name:
    """The DN in the order seen in Vietnamese government certificates (C first, CN last).
    A pure function of `data`; the last 4096 names built are kept (a batch of re-issues builds
    the same DNs again, and building one costs more than the rest of step 2; issue 8)."""
    try:
        return _built_name(data)
    except TypeError:  # unhashable (a list of units): build it without keeping it
        return _build_name(data)


@functools.lru_cache(maxsize=4096)
def _built_name(data: SubjectData) -> x509.Name:
    return _build_name(data)


def name_text(data: SubjectData) -> str:
    """build_name(data).rfc4514_string(), kept like the name itself (the certificate row's
    subject column)."""
    try:
        return _name_text(data)
    except TypeError:  # unhashable: as build_name
        return _build_name(data).rfc4514_string()


@functools.lru_cache(maxsize=4096)
def _name_text(data: SubjectData) -> str:
    return _built_name(data).rfc4514_string()


def _build_name(data: SubjectData) -> x509.Name:
    d = data.cleaned()
    rdns = [x509.NameAttribute(NameOID.COUNTRY_NAME, d.country)]
    if d.locality:
        rdns.append(_attr(NameOID.LOCALITY_NAME, d.locality))
    if d.organization:
        rdns.append(_attr(NameOID.ORGANIZATION_NAME, d.organization))
    for unit in d.organizational_units:
        rdns.append(_attr(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    rdns.append(_attr(NameOID.COMMON_NAME, d.common_name))
    return x509.Name(rdns)


def check_name_text(name: x509.Name, what: str) -> None:
    """Refuse control characters anywhere in a DN we were given (e.g. a CSR's subject)."""
    for attr in name:
        value = attr.value
        if isinstance(value, bytes):
            continue
        for ch in value:
            if unicodedata.category(ch) in ("Cc", "Cf"):
                raise InvalidInput(f"{what} contains a control character (U+{ord(ch):04X})",
                                   field="subject", code="control_character")
