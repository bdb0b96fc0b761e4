"""Prepared TBS templates: the certificate assembled from its linted shape (issue 8).

Building a certificate with cryptography's builder, making the linting copy and parsing it back
for the lint gate cost ~0.3 ms, about a seventh of the CPU of a certificate issued through the
batch API. Yet for one profile, one issuing CA and one subject shape every certificate is the
same bytes but for a few fields. A `TbsTemplate` is learned from a certificate that the builder
made and that passed the whole gate (pkilint for its shape, lint.py): its TBS is split into the
fixed parts (version, signature algorithm, issuer, every extension but two) and the parts that
vary (serial number, validity, subject, public key, subject key identifier, subject alternative
name). Later certificates of the same *input shape* (`shape_of`) are assembled from the fixed
parts and their own values, DER-encoded here by the rules the builder follows (RFC 5280:
UTCTime before 2050, GeneralizedTime from 2050; SKI method 1; minimal INTEGER).

What keeps this safe:
- a template is kept only if assembling the very certificate it was learned from gives the
  builder's TBS byte for byte, and the next CHECKS certificates of each template are built
  both ways and compared; any difference drops the template for good (logged) and the
  certificate goes the builder's way;
- the varying values get the gate's per-certificate checks (lint.value_findings: subject
  attribute values with pkilint's ASN.1 specs, SAN syntax, serial range);
- anything unusual (a time with fractions, a non-ASCII e-mail, a key or name form not seen at
  learning) has no template and goes the builder's way;
- the signed certificate is still parsed by cryptography, its TBS compared and its signature
  verified before release (signing.check_signed).
"""
from __future__ import annotations

import datetime as dt
import logging
import threading

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.issuance.lint import der_tlv

log = logging.getLogger(__name__)

CHECKS = 4  # certificates of each new template also built by the builder and compared
_SKI_OID = b"\x06\x03\x55\x1d\x0e"  # 2.5.29.14
_SAN_OID = b"\x06\x03\x55\x1d\x11"  # 2.5.29.17
_SKI, _SAN = "ski", "san"
_MAX = 1024  # templates kept (one per profile x CA x subject shape x key type x SAN form)


class _NoTemplate(Exception):
    """This certificate or TBS does not fit the template scheme: use the builder."""


def _tlv(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end) of the DER TLV at pos (single-octet tags)."""
    tag = buf[pos]
    first = buf[pos + 1]
    pos += 2
    if first & 0x80:
        n = first & 0x7F
        if not 0 < n <= 4:
            raise _NoTemplate("unexpected length form")
        length = int.from_bytes(buf[pos:pos + n], "big")
        pos += n
    else:
        length = first
    end = pos + length
    if end > len(buf):
        raise _NoTemplate("truncated")
    return tag, pos, end


def _children(buf: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(tag, TLV start, TLV end) of each element in buf[start:end]."""
    out = []
    pos = start
    while pos < end:
        tag, _c, e = _tlv(buf, pos)
        out.append((tag, pos, e))
        pos = e
    return out


def _integer(value: int) -> bytes:
    return der_tlv(0x02, value.to_bytes((value.bit_length() + 8) // 8, "big"))


def _time(t: dt.datetime) -> bytes:
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc)
    if t.microsecond:
        raise _NoTemplate("fractional seconds")
    if 1950 <= t.year < 2050:  # RFC 5280 4.1.2.5
        return der_tlv(0x17, t.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return der_tlv(0x18, t.strftime("%Y%m%d%H%M%SZ").encode("ascii"))


def _key_shape(public_key) -> tuple:
    if isinstance(public_key, rsa.RSAPublicKey):
        return ("rsa", public_key.key_size, public_key.public_numbers().e)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ("ec", public_key.curve.name)
    raise _NoTemplate("key type")


def san_values(email: str | None, dns: tuple[str, ...], profile) -> list[tuple[int, str]]:
    """(context tag, value) of each GeneralName the builder puts in the SAN, in its order."""
    out = []
    if profile.email_in_san and email:
        out.append((0x81, email))  # rfc822Name [1] IA5String
    if profile.dns_in_san:
        out.extend((0x82, d) for d in dns)  # dNSName [2] IA5String
    for _tag, value in out:
        if not value.isascii():
            raise _NoTemplate("non-ASCII SAN value")
    return out


def shape_of(prep) -> tuple:
    """The input shape: everything the TBS's fixed parts and the lint verdict of its shape can
    depend on, read from what goes into the builder."""
    subject = tuple((a.oid.dotted_string, a._type) for a in prep.name)
    if len(prep.name.rdns) != len(subject):
        raise _NoTemplate("multi-valued RDN")
    opts = prep.opts
    padding = opts.get("rsa_padding")
    return (id(prep.profile), id(prep.issuer), prep.ca_spec,
            type(opts["algorithm"]).__name__, type(padding).__name__ if padding else None,
            repr(getattr(padding, "_salt_length", None)), subject,
            _key_shape(prep.public_key),
            tuple(tag for tag, _v in san_values(prep.email, prep.dns, prep.profile)),
            prep.now.year < 2050, prep.not_after.year < 2050,
            not prep.now.microsecond and not prep.not_after.microsecond)


class TbsTemplate:
    def __init__(self, prep, tbs: bytes, sig_alg: bytes) -> None:
        """Split the builder's TBS of `prep` (raises _NoTemplate when it does not fit)."""
        self.profile, self.issuer = prep.profile, prep.issuer  # kept: ids stay theirs
        self.sig_alg = sig_alg  # the certificate's signatureAlgorithm TLV
        self.checks_left = CHECKS
        tag, start, end = _tlv(tbs, 0)
        parts = _children(tbs, start, end)
        if tag != 0x30 or end != len(tbs) or len(parts) != 8 or parts[0][0] != 0xA0 \
                or parts[7][0] != 0xA3:
            raise _NoTemplate("TBS layout")
        self.version = tbs[parts[0][1]:parts[0][2]]
        self.signature = tbs[parts[2][1]:parts[2][2]]
        self.issuer_name = tbs[parts[3][1]:parts[3][2]]
        _t, es, ee = _tlv(tbs, parts[7][1])
        _t, ls, le = _tlv(tbs, es)  # the SEQUENCE OF Extension
        self.extensions: list[bytes | str] = []
        for _tag, s, e in _children(tbs, ls, le):
            ext = tbs[s:e]
            _t, cs, _ce = _tlv(ext, 0)
            oid = ext[cs:cs + len(_SKI_OID)]
            if oid == _SKI_OID:
                self.extensions.append(_SKI)
            elif oid == _SAN_OID:
                self.extensions.append(_SAN)
            else:
                self.extensions.append(ext)
        if self.assemble(prep) != tbs:
            raise _NoTemplate("the assembled TBS differs from the builder's")

    def assemble(self, prep) -> bytes:
        """The TBS of `prep`: the fixed parts and its own values."""
        pub = prep.public_key
        spki = pub.public_bytes(serialization.Encoding.DER,
                                serialization.PublicFormat.SubjectPublicKeyInfo)
        exts = []
        for ext in self.extensions:
            if ext == _SKI:
                digest = x509.SubjectKeyIdentifier.from_public_key(pub).digest
                exts.append(der_tlv(0x30, _SKI_OID + der_tlv(0x04, der_tlv(0x04, digest))))
            elif ext == _SAN:
                names = b"".join(der_tlv(tag, value.encode("ascii")) for tag, value
                                 in san_values(prep.email, prep.dns, prep.profile))
                exts.append(der_tlv(0x30, _SAN_OID + der_tlv(0x04, der_tlv(0x30, names))))
            else:
                exts.append(ext)
        return der_tlv(0x30, b"".join((
            self.version, _integer(prep.serial), self.signature, self.issuer_name,
            der_tlv(0x30, _time(prep.now) + _time(prep.not_after)),
            prep.name.public_bytes(), spki,
            der_tlv(0xA3, der_tlv(0x30, b"".join(exts))))))


class Templates:
    """Learned templates by input shape; thread-safe; shapes that proved unfit are remembered
    so that they are not learned again."""

    def __init__(self) -> None:
        self._by_shape: dict[tuple, TbsTemplate | None] = {}
        self._lock = threading.Lock()
        self.assembled = 0

    def clear(self) -> None:
        with self._lock:
            self._by_shape.clear()

    def shape(self, prep) -> tuple | None:
        try:
            return shape_of(prep)
        except _NoTemplate:
            return None

    def get(self, shape: tuple | None) -> TbsTemplate | None:
        return None if shape is None else self._by_shape.get(shape)

    def learn(self, shape: tuple | None, prep, tbs: bytes, sig_alg: bytes) -> None:
        """Remember the template of a certificate the builder made and the gate passed."""
        if shape is None or shape in self._by_shape:
            return
        try:
            tpl: TbsTemplate | None = TbsTemplate(prep, tbs, sig_alg)
        except (_NoTemplate, IndexError, ValueError) as exc:
            log.info("no TBS template for profile %s: %s", prep.profile.name, exc)
            tpl = None
        with self._lock:
            if len(self._by_shape) >= _MAX:
                self._by_shape.clear()
            self._by_shape.setdefault(shape, tpl)

    def assemble(self, shape: tuple, tpl: TbsTemplate, prep, build_tbs) -> bytes | None:
        """The TBS of `prep` from `tpl`, or None when the builder must make it. While the
        template is new, `build_tbs()` (the builder's TBS) is compared with it; a difference
        drops the template."""
        try:
            tbs = tpl.assemble(prep)
        except _NoTemplate:
            return None
        if tpl.checks_left > 0:
            tpl.checks_left -= 1
            if build_tbs() != tbs:
                log.error("TBS template of profile %s differs from the builder; dropped",
                          prep.profile.name)
                with self._lock:
                    self._by_shape[shape] = None
                return None
        self.assembled += 1
        return tbs


TEMPLATES = Templates()
