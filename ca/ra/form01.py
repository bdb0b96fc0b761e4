"""Form 01 (registration of a person): field checks that name the field at fault."""
from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from ca.errors import InvalidInput
from ca.names import UB_COMMON_NAME, clean_text
from ca.registry import DEVICE_TYPES

ID_TYPES = ("CCCD", "CMND", "PASSPORT")
KINDS = ("person", "organization", "device")
EMAIL_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@"
                      r"(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                      r"[A-Za-z]{2,63}$")
PASSPORT_RE = re.compile(r"^[A-Z][0-9]{7,8}$")
FIELDS = {"full_name", "id_number", "id_type", "email", "organization_id", "date_of_birth",
          "position", "mobile", "device_type", "kind"}


@dataclass(frozen=True)
class Form01:
    full_name: str
    id_type: str
    id_number: str
    email: str
    organization_id: int
    date_of_birth: dt.date | None = None
    position: str | None = None
    mobile: str | None = None
    device_type: str = "TOKEN"
    kind: str = "person"


def _text(data: dict, name: str, *, required: bool, max_chars: int) -> str | None:
    value = data.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidInput(f"{name} is required", field=name, code="required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", field=name, code="wrong_type")
    return clean_text(value, field_name=name, max_chars=max_chars)


def check_id_number(id_type: str, number: str, born: dt.date | None) -> str:
    """CCCD: 12 digits (province 001-096, century/sex digit, year of birth); CMND: 9 digits;
    passport: a letter and 7-8 digits."""
    number = number.replace(" ", "").upper()
    if id_type == "CCCD":
        if not (len(number) == 12 and number.isascii() and number.isdigit()):
            raise InvalidInput("a CCCD number is exactly 12 digits", field="id_number",
                               code="invalid_cccd")
        if not 1 <= int(number[:3]) <= 96:
            raise InvalidInput("a CCCD number starts with a province code 001-096",
                               field="id_number", code="invalid_cccd")
        if born is not None:
            century = 1900 + 100 * (int(number[3]) // 2)
            if century + int(number[4:6]) != born.year:
                raise InvalidInput("the CCCD number does not match the year of birth",
                                   field="id_number", code="invalid_cccd")
    elif id_type == "CMND":
        if not (len(number) == 9 and number.isascii() and number.isdigit()):
            raise InvalidInput("a CMND number is exactly 9 digits", field="id_number",
                               code="invalid_cmnd")
    elif not PASSPORT_RE.match(number):
        raise InvalidInput("a passport number is a letter followed by 7 or 8 digits",
                           field="id_number", code="invalid_passport")
    return number


MOBILE_RE = re.compile(r"^((\+84|0)[ .-]?[35789]([ .-]?[0-9]){8})?$")


def check_mobile(value: str) -> str:
    """A Vietnamese mobile number: 0 or +84, then 9 digits starting 3, 5, 7, 8 or 9;
    spaces, dots and dashes between digits are allowed and dropped."""
    if not MOBILE_RE.match(value):
        raise InvalidInput("a mobile number is 10 digits starting 03, 05, 07, 08 or 09 "
                           "(or +84 and 9 digits)", field="mobile", code="invalid_mobile")
    digits = "".join(c for c in value if c.isdigit() or c == "+")
    return "0" + digits[3:] if digits.startswith("+84") else digits


def check_email(value: str) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    if len(value) > 254 or not EMAIL_RE.match(value):
        raise InvalidInput("not a valid e-mail address", field="email", code="invalid_email")
    local, domain = value.rsplit("@", 1)
    return f"{local}@{domain.lower()}"


def check_date_of_birth(value: Any, today: dt.date) -> dt.date | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput("date_of_birth is a date YYYY-MM-DD", field="date_of_birth",
                           code="wrong_type")
    try:
        born = dt.date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput("date_of_birth is a date YYYY-MM-DD", field="date_of_birth",
                           code="invalid_date") from None
    if born > today or born.year < today.year - 110:
        raise InvalidInput("date_of_birth is not a plausible date of birth",
                           field="date_of_birth", code="invalid_date")
    return born


def parse_form01(data: Any, today: dt.date) -> Form01:
    """Validate a registration body. Unknown fields are refused, so a typo is not ignored."""
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object", code="invalid_body")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}", field=unknown[0], code="unknown_field")
    kind = data.get("kind")
    kind = "person" if kind is None else kind
    if not isinstance(kind, str) or kind not in KINDS:
        raise InvalidInput(f"kind is one of {', '.join(KINDS)}", field="kind")
    full_name = _text(data, "full_name", required=True, max_chars=UB_COMMON_NAME)
    born = check_date_of_birth(data.get("date_of_birth"), today)
    raw_id = _text(data, "id_number", required=True, max_chars=32)
    id_type = data.get("id_type")
    if id_type is None:
        id_type = "CMND" if (raw_id.isdigit() and len(raw_id) == 9) else (
            "PASSPORT" if raw_id[:1].isalpha() else "CCCD")
    if not isinstance(id_type, str) or id_type.upper() not in ID_TYPES:
        raise InvalidInput(f"id_type is one of {', '.join(ID_TYPES)}", field="id_type")
    id_type = id_type.upper()
    id_number = check_id_number(id_type, raw_id, born)
    email = check_email(_text(data, "email", required=True, max_chars=254))
    org = data.get("organization_id")
    if org is None:
        raise InvalidInput("organization_id is required", field="organization_id",
                           code="required")
    if isinstance(org, bool) or not isinstance(org, int) or not 0 < org < 2**31:
        raise InvalidInput("organization_id must be a positive integer",
                           field="organization_id", code="wrong_type")
    mobile = _text(data, "mobile", required=False, max_chars=20)
    device = data.get("device_type")
    device = "TOKEN" if device is None else device
    if not isinstance(device, str) or device.strip().upper() not in DEVICE_TYPES:
        raise InvalidInput(f"device_type is one of {', '.join(DEVICE_TYPES)}",
                           field="device_type", code="invalid_device_type")
    return Form01(full_name=full_name, id_type=id_type, id_number=id_number, email=email,
                  organization_id=org, date_of_birth=born,
                  position=_text(data, "position", required=False, max_chars=200),
                  mobile=check_mobile(mobile) if mobile else None,
                  device_type=device.strip().upper(), kind=kind)
