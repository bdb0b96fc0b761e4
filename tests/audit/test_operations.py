"""The operations snapshot: CA keys in the HSM, CRL/OCSP freshness, leases, intents, audit lag."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from ca import audit
from ca.audit_checkpoint import take_checkpoint
from ca.operations import operations_status
from ca.store.models import Certificate, CertificateAuthority
from ca.store.models_crl import SchedulerLease


def test_snapshot_of_the_demo_pki(db, clock, key_store, audit_key, services):
    now = clock.now()
    with db.transaction() as s:
        audit.record(s, "test.event", actor="t", at=now)
    take_checkpoint(db, key_store, clock)
    with db.transaction() as s:
        audit.record(s, "test.event", actor="t", at=now)
        s.add(SchedulerLease(name="relying-party", holder="host:1", acquired_at=now,
                             expires_at=now + dt.timedelta(seconds=90)))
        issuing = s.execute(select(CertificateAuthority.id).where(
            CertificateAuthority.name == "issuing")).scalar_one()
        s.add(Certificate(ca_id=issuing, serial="7f" * 10, state="reserved", profile="personal",
                          subject="CN=x", not_before=now, not_after=now, spki_sha256="0" * 64,
                          tbs_sha256="0" * 64, reserved_at=now - dt.timedelta(hours=2)))
    with db.transaction() as s:
        st = operations_status(s, now, key_store)
    names = [c["name"] for c in st["cas"]]
    assert names == ["root", "issuing"]
    assert all(c["key"]["reachable"] and c["key"]["sensitive"] and not c["key"]["extractable"]
               for c in st["cas"])
    assert all(c["days_left"] > 3000 for c in st["cas"])
    assert st["scheduler"][0]["alive"] and st["scheduler"][0]["holder"] == "host:1"
    assert st["intents"]["pending"] == 1 and st["intents"]["oldest_age_seconds"] == 7200
    assert st["audit"]["uncheckpointed_events"] == 1
    assert st["audit"]["key"]["reachable"] and st["audit"]["key"]["days_left"] > 1000
    # without the HSM nothing is claimed about keys
    with db.transaction() as s:
        st = operations_status(s, now)
    assert st["cas"][0]["key"] == {"checked": False}


def test_unreachable_key_is_reported_not_raised(db, clock, key_store):
    with db.transaction() as s:
        s.execute(update(CertificateAuthority).where(CertificateAuthority.name == "root")
                  .values(key_id="ab" * 20))
    with db.transaction() as s:
        st = operations_status(s, clock.now(), key_store)
    root = st["cas"][0]
    assert root["key"]["checked"] and root["key"]["reachable"] is False
