"""SIGKILL at random moments of 100 issuances (issue 8, point 5).

A real process issues through the core service (tests/faults/issuer.py) and is killed from
outside with SIGKILL at a random moment (0-100 ms into its n-th attempt, n random in 1..20),
round after round, until 100 issuance attempts were
made; one round dies at the `after_sign` fault point so that a signed-but-unstored certificate
is certain to occur. Then `govca ca recover` runs and the database must hold:
every certificate the process released, exactly once, issued and verifiable; no serial left
'reserved' (each one abandoned = never released, with its audit event); an intact audit chain.
"""
from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from cryptography import x509
from sqlalchemy import func, select

from ca import audit
from ca.store.models import AuditEvent, Certificate, CertificateAuthority, Subscriber
from tests.faults.helpers import HsmCopy
from tests.integration.test_core_cli import cli_env, run_cli

ROOT = Path(__file__).resolve().parents[2]
ATTEMPTS = 100
MAX_ROUNDS = 60
TIME_LIMIT = 300.0  # seconds for all rounds together


class Round:
    """One issuer process; its output is read line by line as it comes."""

    def __init__(self, env: dict, count: int, subscribers: list[int]) -> None:
        self.lines: list[str] = []
        self.first_attempt = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.issuer", str(count), *map(str, subscribers)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode().strip()
            self.lines.append(line)
            if line.startswith("ATTEMPT"):
                self.first_attempt.set()

    def finish(self, kill_at: tuple[int, float] | None) -> int:
        """Wait for the process; with kill_at=(n, delay), SIGKILL it `delay` seconds after its
        n-th attempt began (a random moment inside an issuance, whatever the machine's speed)."""
        if kill_at is not None:
            n, delay = kill_at
            deadline = time.monotonic() + 60
            while self.attempts() < n and self.proc.poll() is None:
                if time.monotonic() > deadline:
                    self.proc.kill()
                    raise AssertionError("issuer too slow: "
                                         + self.proc.stderr.read().decode()[-2000:])
                time.sleep(0.002)
            time.sleep(delay)
            self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        self.stderr = self.proc.stderr.read().decode()
        return code

    def attempts(self) -> int:
        return sum(1 for ln in self.lines if ln.startswith("ATTEMPT"))

    def issued(self) -> list[tuple[str, str]]:
        return [tuple(ln.split()[2:4]) for ln in self.lines if ln.startswith("ISSUED")]


def _subscribers(db) -> list[int]:
    with db.transaction() as s:
        return list(s.execute(select(Subscriber.id).where(
            Subscriber.username.like("staff.%"), Subscriber.kind == "person")
            .order_by(Subscriber.id)).scalars())


def test_sigkill_at_random_points_of_100_issuances(db, hsm_config, tmp_path):
    seed = int(os.environ.get("GOVCA_FAULT_SEED", random.randrange(1 << 30)))
    rnd = random.Random(seed)
    # A private copy of the token: SoftHSM rewrites token.object at each login, and a kill
    # during that write would damage the token that the other tests share.
    hsm = HsmCopy(hsm_config, tmp_path / "hsm")
    env = cli_env(tmp_path, hsm_config, SOFTHSM2_CONF=str(hsm.conf))
    subscribers = _subscribers(db)
    assert len(subscribers) >= 5
    with db.transaction() as s:
        first_new_id = (s.execute(select(func.max(Certificate.id))).scalar() or 0) + 1
        issuing = s.execute(select(CertificateAuthority).where(
            CertificateAuthority.name == "issuing")).scalar_one()
        ca_cert = x509.load_der_x509_certificate(issuing.certificate_der)

    released: list[tuple[str, str]] = []
    attempts = kills = rounds = 0
    started = time.monotonic()
    # A certain signed-but-unstored certificate: die right after the HSM signature.
    r = Round({**env, "GOVCA_TEST_FAULT": "after_sign"}, 1, subscribers)
    assert r.finish(None) == 137, r.stderr
    assert r.attempts() == 1 and r.issued() == []
    attempts, kills = 1, 1
    while attempts < ATTEMPTS:
        assert rounds < MAX_ROUNDS and time.monotonic() - started < TIME_LIMIT, \
            f"only {attempts} attempts in {rounds} rounds (seed {seed})"
        rounds += 1
        r = Round(env, ATTEMPTS - attempts, subscribers)
        code = r.finish(kill_at=(rnd.randint(1, 20), rnd.uniform(0.0, 0.1)))
        assert code in (0, -signal.SIGKILL), f"issuer failed ({code}):\n{r.stderr[-3000:]}"
        kills += code == -signal.SIGKILL
        attempts += r.attempts()
        released += r.issued()
    assert kills >= 5, f"too few kills landed ({kills}, seed {seed})"

    # Recovery: the processes are dead, so every intent is old enough.
    rec = run_cli(env, "ca", "recover", "--older-than-minutes", "0")
    assert rec.returncode == 0, rec.stderr

    with db.transaction() as s:
        rows = s.execute(select(Certificate).where(Certificate.id >= first_new_id)
                         .order_by(Certificate.id)).scalars().all()
        events = s.execute(select(AuditEvent.action, AuditEvent.target).where(
            AuditEvent.action.like("cert.issue%"))).all()
        assert not audit.verify_chain(s), f"the audit chain has problems (seed {seed})"
    by_serial = {r.serial: r for r in rows}
    assert len(by_serial) == len(rows), "a serial appears twice"
    states = {}
    for row in rows:
        states[row.state] = states.get(row.state, 0) + 1
    msg = f"seed {seed}, {attempts} attempts, {kills} kills, {rounds} rounds, states {states}"
    print(msg)

    # Every certificate the client received is in the database, issued, exactly as received.
    assert len(released) == len(set(s for s, _ in released)), msg
    for serial, digest in released:
        row = by_serial.get(serial)
        assert row is not None, f"released certificate {serial} is not in the database ({msg})"
        assert row.state == "issued" and hashlib.sha256(row.der).hexdigest() == digest, msg

    # Nothing is left in flight; a killed process never leaves 'failed' (only a refusal does).
    assert set(states) <= {"issued", "abandoned"}, msg
    assert states.get("abandoned", 0) >= 1, msg  # at least the after_sign round
    # At most one reservation per attempt; a kill can store at most one unreleased certificate.
    assert len(rows) <= attempts, msg
    assert 0 <= states.get("issued", 0) - len(released) <= kills, msg

    # Every issued certificate is what the CA signed; abandoned serials carry no certificate.
    intents = {t for a, t in events if a == "cert.issue.intent"}
    issued_ev = {t for a, t in events if a == "cert.issue"}
    abandoned_ev = {t for a, t in events if a == "cert.issue.abandoned"}
    for row in rows:
        target = f"issuing:{row.serial}"
        assert target in intents, msg
        if row.state == "issued":
            cert = x509.load_der_x509_certificate(row.der)
            assert format(cert.serial_number, "x") == row.serial
            cert.verify_directly_issued_by(ca_cert)
            assert target in issued_ev and target not in abandoned_ev, msg
        else:
            assert row.der is None and row.issued_at is None, msg
            assert "never released" in row.failure_reason
            assert target in abandoned_ev and target not in issued_ev, msg

    # The same verdict from the operator's tool, and a second recovery finds nothing.
    verify = run_cli(env, "audit", "verify", "--no-hsm")
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()
    again = run_cli(env, "ca", "recover", "--older-than-minutes", "0")
    assert again.returncode == 0 and b"0 intent(s) resolved" in again.stdout, again.stdout
