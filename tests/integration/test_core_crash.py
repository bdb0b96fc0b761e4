"""A real crash between reservation and storage (the process dies with os._exit): no certificate
is released, the serial stays reserved with an audited intent, recovery abandons it, and the CA
keeps issuing."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from ca import audit
from ca.clock import FixedClock, UTC
from ca.issuance.service import IssueRequest, recover_intents
from ca.store.models import AuditEvent, Certificate, Subscriber
from tests import factories
from tests.integration.test_core_cli import cli_env, run_cli


def _state(db):
    with db.transaction() as s:
        rows = s.execute(select(Certificate).order_by(Certificate.id)).scalars().all()
        events = s.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all()
        return rows, events


def _crash(tmp_path, hsm_config, point: str):
    env = cli_env(tmp_path, hsm_config, GOVCA_TEST_FAULT=point)
    csr = tmp_path / "req.pem"
    csr.write_bytes(factories.csr())
    return run_cli(env, "cert", "issue", "--csr", str(csr), "--subscriber", "staff.hanoi.1")


@pytest.mark.parametrize("point", ["after_reserve", "after_sign"])
def test_crash_leaves_a_reserved_serial_and_recovery_abandons_it(point, db, hsm_config, tmp_path,
                                                                 issuance):
    rows_before, events_before = _state(db)
    result = _crash(tmp_path, hsm_config, point)
    assert result.returncode == 137, result.stderr  # died at the fault point
    assert result.stdout == b"", "no certificate may be released by a crashed issuance"

    rows, events = _state(db)
    new_rows = rows[len(rows_before):]
    assert len(new_rows) == 1
    row = new_rows[0]
    assert row.state == "reserved" and row.der is None and row.issued_at is None
    assert row.fingerprint_sha256 is None
    new_events = events[len(events_before):]
    assert [e.action for e in new_events] == ["cert.issue.intent"]
    assert new_events[0].target == f"issuing:{row.serial}"

    # Recovery, at a time after the crash (the subprocess used the system clock).
    later = FixedClock(dt.datetime.now(UTC) + dt.timedelta(minutes=10))
    assert recover_intents(db, later, older_than=dt.timedelta(minutes=5)) \
        == [f"issuing:{row.serial}"]
    with db.transaction() as s:
        stored = s.get(Certificate, row.id)
        assert stored.state == "abandoned" and stored.der is None
        assert "never released" in stored.failure_reason
        last = s.execute(select(AuditEvent).order_by(AuditEvent.seq.desc())).scalars().first()
        assert last.action == "cert.issue.abandoned" and last.target == f"issuing:{row.serial}"
    # Recovery is idempotent, and the audit chain is intact.
    assert recover_intents(db, later, older_than=dt.timedelta(minutes=5)) == []
    with db.transaction() as s:
        assert not audit.verify_chain(s), "the audit chain has problems"

    # The CA keeps issuing.
    with db.transaction() as s:
        sub = s.execute(select(Subscriber.id).where(Subscriber.username == "staff.hanoi.1")
                        ).scalar_one()
    after = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                        subscriber_id=sub, csr=factories.csr()))
    assert after.state == "issued" and after.serial != row.serial


def test_recent_intents_are_left_alone(db, hsm_config, tmp_path):
    """An intent younger than the cut-off may still be in flight: recovery does not touch it."""
    assert _crash(tmp_path, hsm_config, "after_sign").returncode == 137
    now = FixedClock(dt.datetime.now(UTC))
    assert recover_intents(db, now, older_than=dt.timedelta(hours=1)) == []
    with db.transaction() as s:
        assert s.execute(select(func.count()).select_from(Certificate).where(
            Certificate.state == "reserved")).scalar_one() == 1


def test_govca_ca_recover(db, hsm_config, tmp_path):
    assert _crash(tmp_path, hsm_config, "after_sign").returncode == 137
    env = cli_env(tmp_path, hsm_config)
    result = run_cli(env, "ca", "recover", "--older-than-minutes", "0")
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "1 intent(s) resolved" in out and "abandoned issuing:" in out
    with db.transaction() as s:
        states = s.execute(select(Certificate.state).where(Certificate.der.is_(None))).scalars()
        assert sorted(states) == ["abandoned"]
    # The CLI issues again afterwards.
    csr = tmp_path / "next.pem"
    csr.write_bytes(factories.csr())
    again = run_cli(env, "cert", "issue", "--csr", str(csr), "--subscriber", "staff.hanoi.2")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(b"-----BEGIN CERTIFICATE-----")


def _point_issuing_key_at(db, key_id: str) -> None:
    from ca.store.models import CertificateAuthority
    with db.transaction() as s:
        s.execute(select(CertificateAuthority).where(
            CertificateAuthority.name == "issuing")).scalar_one().key_id = key_id


@pytest.mark.parametrize("wrong", ["missing", "root"])
def test_signing_failure_in_process_marks_the_serial_failed(wrong, db, issuance):
    """A database that no longer matches the token (bad restore): the key is missing, or it
    is another CA's key. Nothing is released; the serial is 'failed' at once and audited."""
    from ca.errors import HsmUnavailable, IntegrityError
    from ca.store.models import CertificateAuthority
    with db.transaction() as s:
        root_key = s.execute(select(CertificateAuthority.key_id).where(
            CertificateAuthority.name == "root")).scalar_one()
        sub = s.execute(select(Subscriber.id).where(Subscriber.username == "staff.hanoi.5")
                        ).scalar_one()
    _point_issuing_key_at(db, "00" * 16 if wrong == "missing" else root_key)
    error = HsmUnavailable if wrong == "missing" else IntegrityError
    with pytest.raises(error) as exc:
        issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                    subscriber_id=sub, csr=factories.csr()))
    assert "\n" not in exc.value.message
    with db.transaction() as s:
        row = s.execute(select(Certificate).order_by(Certificate.id.desc())).scalars().first()
        assert row.state == "failed" and row.der is None
        assert row.failure_reason.startswith(exc.value.code)
        last = s.execute(select(AuditEvent).order_by(AuditEvent.seq.desc())).scalars().first()
        assert last.action == "cert.issue.failed" and last.target == f"issuing:{row.serial}"
    # Nothing to recover: failed serials are already resolved.
    later = FixedClock(dt.datetime.now(UTC) + dt.timedelta(days=1))
    assert recover_intents(db, later, older_than=dt.timedelta(minutes=5)) == []
