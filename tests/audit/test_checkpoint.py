"""The audit key ceremony and signed checkpoints, with the key in the session's SoftHSM token."""
from __future__ import annotations

import pytest
from cryptography import x509
from sqlalchemy import func, select, text

from ca import audit
from ca.audit import AuditTampered
from ca.audit_chain import checkpoint_payload, signature_valid
from ca.audit_checkpoint import checkpoint, init_key, take_checkpoint
from ca.audit_verify import verify_trail
from ca.errors import NotFound
from ca.store.models import AuditEvent, Certificate, CertificateAuthority
from ca.store.models_audit import AuditCheckpoint, AuditKey
from tests.audit.conftest import tampering
from tests.tools import openssl_verify, pem, pkilint


def _append(db, clock, n=3):
    with db.transaction() as s:
        for i in range(n):
            audit.record(s, "test.event", actor="tester", at=clock.now(), details={"i": i})


def _problems(db, keys=None):
    with db.transaction() as s:
        return [(p.kind, p.seq) for p in verify_trail(s, keys=keys).problems]


def test_audit_key_ceremony_is_idempotent_and_keeps_the_key_in_the_hsm(
        services, key_store, tmp_path):
    first = init_key(services.db, key_store, services.issuance(), services.clock, actor="t")
    again = init_key(services.db, key_store, services.issuance(), services.clock, actor="t")
    assert first.created and not again.created and again.key.id == first.key.id
    attrs = key_store.attributes(bytes.fromhex(first.key.key_id))
    assert attrs["sensitive"] and not attrs["extractable"] and attrs["never_extractable"]
    cert = x509.load_der_x509_certificate(first.key.certificate_der)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment and not ku.key_cert_sign
    with services.db.transaction() as s:
        cas = {c.name: c.certificate_der for c in s.execute(select(CertificateAuthority)).scalars()}
        row = s.execute(select(Certificate).where(Certificate.serial == first.key.serial)).scalar_one()
        assert row.profile == "audit-signing" and row.state == "issued"
        actions = s.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars().all()
    assert actions[-3:] == ["cert.issue.intent", "cert.issue", "audit.key.init"]
    result = openssl_verify(tmp_path, pem(cert), pem(cas["root"]), pem(cas["issuing"]))
    assert result.returncode == 0, result.stderr
    (tmp_path / "audit.der").write_bytes(first.key.certificate_der)
    lint = pkilint("cert", tmp_path / "audit.der")
    assert lint.returncode == 0, lint.stdout


def test_force_retires_the_old_key_and_old_checkpoints_still_verify(services, audit_key, clock):
    take_checkpoint(services.db, services.keys, clock)
    new = init_key(services.db, services.keys, services.issuance(), clock, force=True, actor="t")
    _append(services.db, clock)
    take_checkpoint(services.db, services.keys, clock)
    with services.db.transaction() as s:
        statuses = dict(s.execute(select(AuditKey.id, AuditKey.status)).all())
        fps = s.execute(select(AuditCheckpoint.key_fingerprint)
                        .order_by(AuditCheckpoint.number)).scalars().all()
    assert statuses == {audit_key.id: "retired", new.key.id: "active"}
    assert fps == [audit_key.fingerprint_sha256, new.key.fingerprint_sha256]
    assert _problems(services.db, services.keys) == []


def test_checkpoint_signs_the_head_in_the_hsm(services, audit_key, clock):
    _append(services.db, clock)
    cp = take_checkpoint(services.db, services.keys, clock)
    with services.db.transaction() as s:
        head_seq = s.execute(select(func.max(AuditEvent.seq))).scalar_one()
        n = s.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    assert (cp.number, cp.seq, cp.event_count) == (1, head_seq, n)
    cert = x509.load_der_x509_certificate(audit_key.certificate_der)
    payload = checkpoint_payload(number=1, seq=cp.seq, hash=cp.hash, count=cp.event_count,
                                 at=cp.at, prev=cp.prev, key_fingerprint=cp.key_fingerprint)
    assert signature_valid(cert.public_key(), cp.algorithm, payload, cp.signature)
    assert not signature_valid(cert.public_key(), cp.algorithm, payload + b" ", cp.signature)
    # The scheduler's entry point does nothing while no event was appended.
    assert checkpoint(services) is None
    _append(services.db, clock, 1)
    second = checkpoint(services)
    assert second.number == 2 and second.seq == head_seq + 1
    assert _problems(services.db, services.keys) == []


def test_checkpoint_needs_an_audit_key(services):
    with pytest.raises(NotFound, match="init-key"):
        take_checkpoint(services.db, services.keys, services.clock)
    assert checkpoint(services) is None


def test_a_broken_chain_is_never_signed(services, audit_key, clock):
    take_checkpoint(services.db, services.keys, clock)
    _append(services.db, clock)
    with tampering(services.db) as conn:
        conn.execute(text("UPDATE audit_event SET details = '{}' WHERE seq = (SELECT MAX(seq) "
                          "FROM audit_event)"))
    with pytest.raises(AuditTampered, match="no checkpoint was signed: altered"):
        take_checkpoint(services.db, services.keys, clock)


def test_truncation_after_a_checkpoint_is_named(services, audit_key, clock):
    _append(services.db, clock, 5)
    cp = take_checkpoint(services.db, services.keys, clock)
    with tampering(services.db) as conn:  # remove the last 3 events and move the head back
        prev = conn.execute(text("SELECT hash FROM audit_event WHERE seq = :s"),
                            {"s": cp.seq - 3}).scalar_one()
        conn.execute(text("DELETE FROM audit_event WHERE seq > :s"), {"s": cp.seq - 3})
        conn.execute(text("UPDATE audit_head SET seq = :s, hash = :h"),
                     {"s": cp.seq - 3, "h": prev})
    assert _problems(services.db) == [("truncated", cp.seq)]
    with pytest.raises(AuditTampered, match="behind the last checkpoint"):
        take_checkpoint(services.db, services.keys, clock)


def test_altered_checkpoint_has_a_bad_signature(services, audit_key, clock):
    cp = take_checkpoint(services.db, services.keys, clock)
    with tampering(services.db) as conn:
        conn.execute(text("UPDATE audit_checkpoint SET event_count = event_count + 1"))
    assert _problems(services.db) == [("checkpoint_signature", cp.seq),
                                      ("checkpoint_count", cp.seq)]


def test_rewriting_the_whole_tail_is_caught_by_the_checkpoint(services, audit_key, clock):
    """An attacker who recomputes every hash after an edit (and the head) keeps the chain
    self-consistent; only the signed checkpoint tells."""
    _append(services.db, clock, 4)
    cp = take_checkpoint(services.db, services.keys, clock)
    with services.db.transaction() as s:
        events = s.execute(select(AuditEvent).where(AuditEvent.seq >= cp.seq - 2)
                           .order_by(AuditEvent.seq)).scalars().all()
        prev = events[0].prev_hash
        forged = []
        for ev in events:
            actor = "mallory" if ev.seq == cp.seq - 2 else ev.actor
            h = audit.event_hash(seq=ev.seq, at=ev.at, action=ev.action, actor=actor,
                                 target=ev.target, domain_id=ev.domain_id, details=ev.details,
                                 prev_hash=prev)
            forged.append((ev.seq, actor, prev, h))
            prev = h
    with tampering(services.db) as conn:
        for seq, actor, prev_hash, h in forged:
            conn.execute(text("UPDATE audit_event SET actor = :a, prev_hash = :p, hash = :h "
                              "WHERE seq = :s"), {"a": actor, "p": prev_hash, "h": h, "s": seq})
        conn.execute(text("UPDATE audit_head SET hash = :h"), {"h": prev})
    assert _problems(services.db) == [("checkpoint_mismatch", cp.seq)]


def test_a_replaced_audit_certificate_is_refused(services, audit_key, clock, key_store):
    """A certificate not issued by a GovCA CA (here: the root's own) cannot vouch for checkpoints,
    and the HSM check catches a certificate that does not match the audit key."""
    cp = take_checkpoint(services.db, services.keys, clock)
    with services.db.transaction() as s:
        other = s.execute(select(Certificate).where(Certificate.profile == "sub-ca")).scalar_one()
    with tampering(services.db) as conn:
        conn.execute(text("UPDATE audit_key SET certificate_der = :d"), {"d": other.der})
    problems = _problems(services.db, key_store)
    assert ("checkpoint_key", cp.seq) in problems


def test_concurrent_checkpoints_get_distinct_numbers(services, audit_key, clock):
    import threading
    results, errors = [], []

    def run():
        try:
            results.append(take_checkpoint(services.db, services.keys, clock).number)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and sorted(results) == [1, 2, 3]
    assert _problems(services.db, services.keys) == []
