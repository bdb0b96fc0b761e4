"""SO-PIN escrow: AES-GCM under a non-extractable key in the CA token; releases audited."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from ca.errors import IntegrityError, NotFound
from ca.store.models import AuditEvent
from ca.store.models_tokens import SoPinEscrow
from ca.tokens import escrow, registry
from tests.tokens.conftest import holder_id


def _dev(s, db, clock, label="t"):
    return registry.register_device(s, holder_id=holder_id(s), device_type="TOKEN", label=label,
                                    actor="officer", at=clock.now())


def test_wrapping_key_lives_in_the_ca_token_and_cannot_leave(sealer):
    attrs = sealer.key_attributes()
    assert attrs == {"sensitive": True, "extractable": False, "never_extractable": True}
    assert sealer.ensure_key() is False  # created once


def test_store_and_release(db, clock, sealer):
    so_pin = "Zq8LmN2pR5tV7xY9"
    with db.transaction() as s:
        dev = _dev(s, db, clock)
        escrow.store_so_pin(s, dev, so_pin, sealer, actor="officer", at=clock.now())
        row = s.execute(select(SoPinEscrow)).scalar_one()
        assert so_pin.encode() not in row.ciphertext and len(row.nonce) == 12
        assert len(row.ciphertext) == len(so_pin) + 16  # GCM tag
        assert escrow.release_so_pin(s, dev, sealer, actor="ra", at=clock.now(),
                                     purpose="unblock", request_ref="r1") == so_pin
        events = {e.action: e.details for e in s.execute(select(AuditEvent)).scalars()}
        assert '"purpose":"unblock"' in events["device.escrow.release"]
        assert so_pin not in "".join(events.values())


def test_ciphertext_is_bound_to_its_device_and_tamper_evident(db, clock, sealer):
    with db.transaction() as s:
        a, b = _dev(s, db, clock, "a"), _dev(s, db, clock, "b")
        escrow.store_so_pin(s, a, "first-secret-pin", sealer, actor="o", at=clock.now())
        escrow.store_so_pin(s, b, "other-secret-pin", sealer, actor="o", at=clock.now())
    with db.transaction() as s:
        ra, rb = (s.execute(select(SoPinEscrow).where(SoPinEscrow.device_id == d.id)).scalar_one()
                  for d in (a, b))
        ra.nonce, ra.ciphertext = rb.nonce, rb.ciphertext  # copy b's escrow onto a
    with db.transaction() as s:
        with pytest.raises(IntegrityError):
            escrow.release_so_pin(s, registry.get_device(s, a.id), sealer, actor="o",
                                  at=clock.now(), purpose="x")
    with db.transaction() as s:
        rb = s.execute(select(SoPinEscrow).where(SoPinEscrow.device_id == b.id)).scalar_one()
        rb.ciphertext = bytes([rb.ciphertext[0] ^ 1]) + rb.ciphertext[1:]
    with db.transaction() as s:
        with pytest.raises(IntegrityError):
            escrow.release_so_pin(s, registry.get_device(s, b.id), sealer, actor="o",
                                  at=clock.now(), purpose="x")
    # The pool survived the refused decryptions.
    nonce, ct = sealer.seal(b"still works", b"aad")
    assert sealer.unseal(nonce, ct, b"aad") == b"still works"


def test_release_without_escrow(db, clock, sealer):
    with db.transaction() as s:
        with pytest.raises(NotFound):
            escrow.release_so_pin(s, _dev(s, db, clock), sealer, actor="o", at=clock.now(),
                                  purpose="x")
