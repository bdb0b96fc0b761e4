"""The OCSP responder (RFC 6960, RFC 5019 profile): answers from pre-signed responses when it
can (no HSM on the read path), signs when it must (nonce, several certIDs, a missing or stale
answer), and refreshes pre-signed answers before they go stale."""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from werkzeug.http import http_date

from ca import serial as serials
from ca.clock import Clock
from ca.errors import HsmUnavailable
from ca.ports import KeyStore
from ca.store.database import Database, is_transient
from ca.store.models import Certificate, CertificateAuthority
from ca.store.models_crl import OcspResponse
from crl import ocsp_codec as codec
from crl.ocsp_store import StatusReader, store_responses
from crl.responder import Signer, current_responder, make_signer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OcspSettings:
    response_validity: dt.timedelta = dt.timedelta(hours=24)  # RFC 5019 2.2.4 nextUpdate
    unknown_validity: dt.timedelta = dt.timedelta(minutes=10)
    refresh_before: dt.timedelta = dt.timedelta(hours=16)  # re-sign when less remains
    max_cert_ids: int = 16  # several certIDs per request, bounded
    cache_ttl: float = 2.0  # seconds an answer stays in the process before the DB is asked again
    cache_size: int = 50_000  # answers per process (~40 MB at most)
    request_cache_size: int = 20_000  # exact request octets -> answer (skips parsing)
    index_ttl: float = 30.0
    # Status reads on the read replica while it lags at most this many seconds (None: primary
    # only). Writes, and the read right after a revocation (refresh_serial), use the primary.
    replica_max_lag: float | None = None


def ocsp_settings(svc) -> OcspSettings:
    """The responder's settings from the service container (GOVCA_OCSP_REPLICA_MAX_LAG)."""
    settings = getattr(svc, "settings", None)
    return OcspSettings(replica_max_lag=getattr(settings, "ocsp_replica_max_lag", None))


@dataclass(frozen=True)
class OcspResult:
    der: bytes
    status: int  # OCSPResponseStatus
    this_update: dt.datetime | None = None
    next_update: dt.datetime | None = None
    cacheable: bool = False  # no nonce: HTTP caches may keep it (RFC 5019 6.2)

    @cached_property
    def etag(self) -> str:
        return hashlib.sha256(self.der).hexdigest()[:32]

    @cached_property
    def http_dates(self) -> tuple[str, str]:
        """Last-Modified and Expires (RFC 5019 6.2), formatted once per answer."""
        return http_date(self.this_update), http_date(self.next_update)


MALFORMED = OcspResult(codec.MALFORMED, codec.MALFORMED_REQUEST)
UNAUTHORIZED = OcspResult(codec.UNAUTHORIZED_RESPONSE, codec.UNAUTHORIZED)
INTERNAL = OcspResult(codec.INTERNAL_ERROR_RESPONSE, codec.INTERNAL_ERROR)
TRY_LATER = OcspResult(codec.TRY_LATER_RESPONSE, codec.TRY_LATER)


def _issuer_hashes(cert: x509.Certificate) -> dict[str, tuple[bytes, bytes]]:
    """RFC 6960 4.1.1: issuerNameHash over the DER of the issuer's subject, issuerKeyHash over
    its public key bits, for each hash a client may use."""
    name = cert.subject.public_bytes()
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    bits = codec.der.spki_key_bits(spki)
    return {h: (hashlib.new(h, name).digest(), hashlib.new(h, bits).digest())
            for h in codec.HASH_OID_BY_NAME}


_SECOND = dt.timedelta(seconds=1)


class _Shape:
    """One shape of nonce requests (crl/ocsp.py OcspService._shaped): the parsed certIDs, where
    the nonce is, and `state` -- what every answer to a request of this shape shares during one
    second, so that an answer is the nonce's octets appended and a signature:
    (second start, second end, monotonic time the statuses and the signer must be read again,
    signer, ResponseData up to the nonce's octets, nextUpdate)."""

    __slots__ = ("cert_ids", "span", "state")

    def __init__(self, req: codec.OcspRequest) -> None:
        self.cert_ids, self.span = req.cert_ids, req.nonce_span
        self.state: tuple | None = None


class OcspService:
    def __init__(self, db: Database, keys: KeyStore, clock: Clock,
                 settings: OcspSettings | None = None) -> None:
        self.db, self.keys, self.clock = db, keys, clock
        self.settings = settings or OcspSettings()
        self._lock = threading.Lock()
        self._index: dict[tuple, int] = {}
        self._sha1: dict[int, tuple[bytes, bytes]] = {}
        self._names: dict[int, str] = {}
        self._index_at = -1e9
        self._signers: dict[int, tuple[Signer | None, float]] = {}
        self._cache: dict[tuple[int, bytes], tuple[OcspResult, float]] = {}
        self.reader = StatusReader(db, replica_max_lag=self.settings.replica_max_lag)
        self._status_cache: dict[tuple[int, str], tuple[object, float]] = {}
        # The request octets of single-certID, nonce-free requests (what RFC 5019 clients send,
        # byte for byte the same each time) -> (answer, when its status was read): a repeated
        # request is answered without parsing. Same freshness rule as _cache.
        self._requests: dict[bytes, tuple[OcspResult, float]] = {}
        # Requests with a nonce: a client sends the same octets each time but for the nonce's
        # value. Keyed by the octets around the nonce value (whose position is found per body
        # length), a request of a known shape is not parsed again: the parse depends on the
        # nonce's length, never on its value (crl/ocsp_codec.py OcspRequest.nonce_span). Each
        # shape also keeps what its answers share within one second (_Shape.state).
        self._shapes: dict[int, tuple[tuple[int, int, int], ...]] = {}
        self._shaped: dict[tuple, _Shape] = {}

    # -- lookups ----------------------------------------------------------------------------
    def _load_index(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._index_at < self.settings.index_ttl:
            return
        index, sha1, names = {}, {}, {}
        with self.db.transaction() as s:
            for ca_id, name, der in s.execute(select(CertificateAuthority.id,
                                                     CertificateAuthority.name,
                                                     CertificateAuthority.certificate_der)):
                hashes_ = _issuer_hashes(x509.load_der_x509_certificate(der))
                for h, (nh, kh) in hashes_.items():
                    index[(h, nh, kh)] = ca_id
                sha1[ca_id], names[ca_id] = hashes_["sha1"], name
        with self._lock:
            self._index, self._sha1, self._names = index, sha1, names
            self._index_at = time.monotonic()

    def issuer_of(self, cid: codec.CertId) -> int | None:
        self._load_index()
        if cid.hash_name is None:
            return None
        key = (cid.hash_name, cid.name_hash, cid.key_hash)
        found = self._index.get(key)
        if found is None and time.monotonic() - self._index_at > 1.0:
            self._load_index(force=True)  # a CA created since the last load
            found = self._index.get(key)
        return found

    def signer(self, ca_id: int) -> Signer | None:
        entry = self._signers.get(ca_id)
        if entry is not None and time.monotonic() - entry[1] < self.settings.index_ttl and \
                (entry[0] is None or entry[0].not_after > self.clock.now()):
            return entry[0]
        with self.db.transaction() as s:
            row = current_responder(s, ca_id, self.clock.now())
        signer = None
        if row is not None:
            if entry is not None and entry[0] is not None and entry[0].responder_id == row.id:
                signer = entry[0]
            else:
                # Signed on the request path from every worker thread: a PKCS#11 session per
                # thread, no pool checkout per answer (hsm/pool.py, "Per-thread sessions").
                key = self.keys.load(bytes.fromhex(row.key_id), row.key_label)
                hot = getattr(key, "for_hot_path", None)  # HSM keys: hsm.keys.per_thread
                signer = make_signer(row, hot() if hot is not None else key)
        self._signers[ca_id] = (signer, time.monotonic())
        return signer

    def forget(self) -> None:
        """Drop every in-process cache (after a responder renewal, in tests)."""
        with self._lock:
            self._cache.clear()
            self._status_cache.clear()
            self._requests.clear()
            self._signers.clear()
            self._shaped.clear()  # their states name a signer
            self._shapes.clear()
            self._index_at = -1e9

    # -- answering --------------------------------------------------------------------------
    def answer(self, body: bytes) -> OcspResult:
        """Any input gives an OCSP response: a status for garbage, never an exception."""
        shape = req = None
        if type(body) is bytes:
            hit = self._requests.get(body)
            if hit is not None and time.monotonic() - hit[1] < self.settings.cache_ttl and \
                    hit[0].next_update > self.clock.now():
                return hit[0]
            spans = self._shapes.get(len(body))
            if spans is not None:
                for span in spans:
                    shape = self._shaped.get((span, body[:span[1]], body[span[2]:]))
                    if shape is not None:
                        nonce = body[span[0]:span[2]]
                        break
        if shape is None:
            try:
                req = codec.parse_request(body, self.settings.max_cert_ids)
            except codec.MalformedRequest:
                return MALFORMED
            if req.nonce_span is not None:
                shape = self._remember_shape(body, req)
                nonce = req.nonce
        try:
            if shape is not None:
                # A nonce: signed now. Within one second, the answers to requests of one shape
                # differ only in the nonce's octets (the end of ResponseData) and the signature.
                state = shape.state
                now = self.clock.now()
                if state is None or not state[0] <= now < state[1] or \
                        time.monotonic() >= state[2] or state[3].not_after <= now:
                    state = self._shape_state(shape, now)
                if state is not None:
                    signer, tbs = state[3], state[4] + nonce
                    if signer.template is not None:
                        der = signer.template.wrap(tbs, signer.sign(tbs))
                    else:
                        der = codec.basic_response(tbs, signer.algorithm, signer.sign(tbs),
                                                   signer.certificate_der)
                    return OcspResult(der, codec.SUCCESSFUL, state[0], state[5])
                if req is None:  # unauthorized, or no responder: the general path answers
                    req = codec.OcspRequest(cert_ids=shape.cert_ids, nonce=nonce,
                                            nonce_span=shape.span)
            if len(req.cert_ids) == 1 and req.nonce is None:
                ca_id = self.issuer_of(req.cert_ids[0])
                if ca_id is None:
                    return UNAUTHORIZED
                result, at = self._cached_at(ca_id, req.cert_ids[0])
                if at is not None:
                    if len(self._requests) >= self.settings.request_cache_size:
                        self._requests.clear()
                    self._requests[bytes(body)] = (result, at)
                return result
            return self._answer(req)
        except HsmUnavailable:
            return TRY_LATER  # RFC 6960 4.2.1 tryLater
        except Exception as exc:
            if is_transient(exc):  # database outage (issue 8): tryLater too, not internalError
                log.warning("OCSP: database unavailable (%s)", type(exc).__name__)
                return TRY_LATER
            log.exception("OCSP request failed")
            return INTERNAL

    def _known_shape(self, body) -> codec.OcspRequest | None:
        """The request `body` parses to, when its shape is known (else None)."""
        if type(body) is not bytes:
            return None
        spans = self._shapes.get(len(body))
        if spans is None:
            return None
        for span in spans:
            ts, a, b = span
            hit = self._shaped.get((span, body[:a], body[b:]))
            if hit is not None:
                return codec.OcspRequest(cert_ids=hit.cert_ids, nonce=body[ts:b],
                                         nonce_span=span)
        return None

    def _remember_shape(self, body, req: codec.OcspRequest) -> _Shape:
        body = bytes(body)
        span = req.nonce_span
        if len(self._shaped) >= self.settings.request_cache_size:
            self._shaped.clear()
            self._shapes.clear()
        spans = self._shapes.get(len(body), ())
        if span not in spans:
            self._shapes[len(body)] = (spans + (span,))[-4:]
        shape = self._shaped[(span, body[:span[1]], body[span[2]:])] = _Shape(req)
        return shape

    def _shape_state(self, shape: _Shape, now_exact: dt.datetime) -> tuple | None:
        """What the answers to `shape` share during the second of `now_exact` (see _Shape), or
        None when they are not signed (an issuer we do not serve, no responder): the general
        path then answers. Built by the same steps as sign_now(), from the same caches."""
        ca_ids = {self.issuer_of(cid) for cid in shape.cert_ids}
        if None in ca_ids or len(ca_ids) != 1:
            return None
        ca_id = ca_ids.pop()
        signer = self.signer(ca_id)
        if signer is None:
            return None
        signer_until = self._signers[ca_id][1] + self.settings.index_ttl
        now = now_exact.replace(microsecond=0)
        cert_ids = shape.cert_ids
        hexes = {cid.serial: serials.to_hex(cid.serial) for cid in cert_ids if cid.serial > 0}
        found, read_at = self._statuses_read(ca_id, list(hexes.values()))
        singles = [self._single(cid.raw, found.get(hexes.get(cid.serial)), now, signer)
                   for cid in cert_ids]
        n = shape.span[2] - shape.span[0]
        tbs = codec.response_data(responder_key_hash=signer.key_hash, produced_at=now,
                                  singles=singles, nonce=bytes(n))  # the nonce's octets last
        state = (now, now + _SECOND, min(read_at + self.settings.cache_ttl, signer_until),
                 signer, tbs[:-n], min(s.next_update for s in singles))
        shape.state = state
        return state

    def _answer(self, req: codec.OcspRequest) -> OcspResult:
        ca_ids = {self.issuer_of(cid) for cid in req.cert_ids}
        # RFC 6960 2.3: unauthorized for an issuer we do not serve. One delegated responder per
        # CA signs a response, so one request names one CA.
        if None in ca_ids or len(ca_ids) != 1:
            return UNAUTHORIZED
        ca_id = ca_ids.pop()
        if len(req.cert_ids) == 1 and req.nonce is None:
            return self._cached(ca_id, req.cert_ids[0])
        return self.sign_now(ca_id, req.cert_ids, req.nonce)

    def _cached(self, ca_id: int, cid: codec.CertId) -> OcspResult:
        return self._cached_at(ca_id, cid)[0]

    def _cached_at(self, ca_id: int, cid: codec.CertId) -> tuple[OcspResult, float | None]:
        """The answer for one certID and the monotonic time its status was read (None: not
        kept, e.g. tryLater)."""
        now = self.clock.now()
        key = (ca_id, cid.raw)
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[1] < self.settings.cache_ttl and \
                hit[0].next_update > now:
            return hit
        serial_hex = serials.to_hex(cid.serial) if cid.serial > 0 else None
        result = None
        presignable = serial_hex is not None and cid.raw == self._canonical(ca_id, cid.serial)
        if presignable:
            row = self.reader.presigned(ca_id, serial_hex, now)
            if row is not None:
                result = OcspResult(row[0], codec.SUCCESSFUL, row[1], row[2], cacheable=True)
        if result is None:
            result, _ = self._sign_single(ca_id, cid, serial_hex, presignable)
            if result.status != codec.SUCCESSFUL:
                return result, None  # tryLater is not kept
        if len(self._cache) >= self.settings.cache_size:
            self._cache.clear()
        entry = self._cache[key] = (result, time.monotonic())
        return entry

    def _canonical(self, ca_id: int, serial: int) -> bytes:
        nh, kh = self._sha1[ca_id]
        return codec.cert_id_der("sha1", nh, kh, serial)

    def _sign_single(self, ca_id, cid, serial_hex, presignable, *, fresh=False):
        signer = self.signer(ca_id)
        if signer is None:
            return TRY_LATER, False
        now = self.clock.now().replace(microsecond=0)
        st = self.reader.statuses(ca_id, [serial_hex] if serial_hex else [],
                                  primary=fresh).get(serial_hex)
        single = self._single(cid.raw, st, now, signer)
        der = self._encode(signer, [single], None, now)
        result = OcspResult(der, codec.SUCCESSFUL, single.this_update, single.next_update,
                            cacheable=True)
        if presignable and single.status != "unknown":
            store_responses(self.db, ca_id, signer.responder_id,
                            [(serial_hex, single, der)])
        return result, True

    def _single(self, cert_id: bytes, st, now: dt.datetime, signer: Signer) -> codec.SingleStatus:
        if st is None:
            # Never issued by this CA, or reserved/failed/abandoned: never "good" (RFC 6960
            # 2.2 unknown), and only briefly cacheable.
            nxt = min(now + self.settings.unknown_validity, signer.not_after)
            return codec.SingleStatus(cert_id, "unknown", now, nxt)
        nxt = min(now + self.settings.response_validity, signer.not_after)
        revoked_at, reason = st
        if revoked_at is not None:
            return codec.SingleStatus(cert_id, "revoked", now, nxt, revoked_at, reason)
        return codec.SingleStatus(cert_id, "good", now, nxt)

    def _encode(self, signer: Signer, singles, nonce, now) -> bytes:
        tbs = codec.response_data(responder_key_hash=signer.key_hash, produced_at=now,
                                  singles=singles, nonce=nonce)
        if signer.template is not None:
            return signer.template.wrap(tbs, signer.sign(tbs))
        return codec.basic_response(tbs, signer.algorithm, signer.sign(tbs),
                                    signer.certificate_der)

    def sign_now(self, ca_id: int, cert_ids, nonce: bytes | None) -> OcspResult:
        """Sign in the HSM now (nonce, several certIDs): RFC 6960 4.4.1 nonce echoed."""
        signer = self.signer(ca_id)
        if signer is None:
            return TRY_LATER
        now = self.clock.now().replace(microsecond=0)
        hexes = {cid.serial: serials.to_hex(cid.serial) for cid in cert_ids if cid.serial > 0}
        found = self._statuses_cached(ca_id, list(hexes.values()))
        singles = [self._single(cid.raw, found.get(hexes.get(cid.serial)), now, signer)
                   for cid in cert_ids]
        der = self._encode(signer, singles, nonce, now)
        return OcspResult(der, codec.SUCCESSFUL, now, min(s.next_update for s in singles),
                          cacheable=nonce is None)

    def _statuses_cached(self, ca_id: int, serial_hexes: list[str]) -> dict:
        """Statuses for signed-now answers, held as long as a pre-signed answer is held in the
        process (cache_ttl): a revocation shows within the same few seconds on both paths."""
        return self._statuses_read(ca_id, serial_hexes)[0]

    def _statuses_read(self, ca_id: int, serial_hexes: list[str]) -> tuple[dict, float]:
        """_statuses_cached() and the monotonic time the oldest of them was read."""
        t = oldest = time.monotonic()
        out, missing = {}, []
        for h in serial_hexes:
            hit = self._status_cache.get((ca_id, h))
            if hit is not None and t - hit[1] < self.settings.cache_ttl:
                if hit[0] is not None:
                    out[h] = hit[0]
                oldest = min(oldest, hit[1])
            else:
                missing.append(h)
        if missing:
            found = self.reader.statuses(ca_id, missing)
            if len(self._status_cache) >= self.settings.cache_size:
                self._status_cache.clear()
            for h in missing:
                self._status_cache[(ca_id, h)] = (found.get(h), t)
            out.update(found)
        return out, oldest

    # -- pre-signing ------------------------------------------------------------------------
    def presign(self, ca_name: str | None = None, *, batch: int = 500,
                limit: int | None = None) -> int:
        """Sign fresh answers for every issued, unexpired certificate whose pre-signed answer is
        missing or within `refresh_before` of its nextUpdate. Returns how many were signed."""
        self._load_index(force=True)
        done = 0
        for ca_id, name in list(self._names.items()):
            if ca_name is not None and name != ca_name:
                continue
            signer = self.signer(ca_id)
            if signer is None:
                continue
            last_id = 0
            while limit is None or done < limit:
                now = self.clock.now().replace(microsecond=0)
                horizon = now + self.settings.refresh_before
                # May read a replica: store_responses re-checks each status on the primary.
                with self.db.read_transaction(self.settings.replica_max_lag,
                                              replica=self.settings.replica_max_lag
                                              is not None) as s:
                    rows = s.execute(
                        select(Certificate.id, Certificate.serial, Certificate.revoked_at,
                               Certificate.revocation_reason)
                        .outerjoin(OcspResponse, (OcspResponse.ca_id == Certificate.ca_id)
                                   & (OcspResponse.serial == Certificate.serial))
                        .where(Certificate.ca_id == ca_id, Certificate.state == "issued",
                               Certificate.not_after > now, Certificate.id > last_id,
                               (OcspResponse.id.is_(None)) | (OcspResponse.next_update < horizon)
                               | (OcspResponse.responder_id != signer.responder_id))
                        .order_by(Certificate.id).limit(batch)).all()
                if not rows:
                    break
                last_id = rows[-1][0]
                items = []
                for _id, serial_hex, revoked_at, reason in rows:
                    cert_id = codec.cert_id_der("sha1", *self._sha1[ca_id], int(serial_hex, 16))
                    single = self._single(cert_id, (revoked_at, reason), now, signer)
                    items.append((serial_hex, single, self._encode(signer, [single], None, now)))
                done += store_responses(self.db, ca_id, signer.responder_id, items)
        return done

    def refresh_serial(self, ca_name: str, serial_hex: str) -> None:
        """Sign and store the current status of one serial (right after a revocation)."""
        self._load_index(force=True)
        ca_id = next((i for i, n in self._names.items() if n == ca_name), None)
        if ca_id is None:
            return
        cid = codec.CertId("sha1", *self._sha1[ca_id], int(serial_hex, 16),
                           raw=self._canonical(ca_id, int(serial_hex, 16)))
        result, _ = self._sign_single(ca_id, cid, serial_hex, True, fresh=True)  # not a replica
        self._cache[(ca_id, cid.raw)] = (result, time.monotonic())
