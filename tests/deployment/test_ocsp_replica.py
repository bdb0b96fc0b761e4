"""OCSP status reads on a read replica (GOVCA_OCSP_REPLICA_MAX_LAG, off by default): used only
when set and while the replica lags less than the bound; the read right after a revocation
(refresh_serial) always goes to the primary; an unreachable replica falls back to the primary.

The stand-in replica is the second PostgreSQL database of test_read_replica.py, where one
certificate is marked revoked that the primary still holds as good: the answer shows which
database was read."""
from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import select, update

from ca.errors import ConfigurationError
from ca.store.database import Database, make_engine, make_read_engine
from ca.store.models import Certificate
from crl.ocsp import OcspService, OcspSettings, ocsp_settings
from crl.ocsp_store import StatusReader
from ra_portal.settings import Settings
from tests.conftest import PG_URL
from tests.deployment.test_read_replica import replica  # noqa: F401  (fixture)
from tests.serverkit import free_port

PG = "postgresql+psycopg://govca@db-primary:5432/govca"


def _an_issued_certificate(db: Database):
    with db.transaction() as s:
        row = s.execute(select(Certificate.ca_id, Certificate.serial).where(
            Certificate.state == "issued", Certificate.revoked_at.is_(None))
            .order_by(Certificate.id)).first()
    assert row is not None, "the demo instance has issued certificates"
    return row


def _revoke_on(url: str, serial: str) -> None:
    engine = make_engine(url)
    with engine.begin() as c:
        c.execute(update(Certificate).where(Certificate.serial == serial).values(
            revoked_at=dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
            revocation_reason="keyCompromise"))
    engine.dispose()


@pytest.mark.postgres_only
def test_ocsp_reads_the_replica_only_when_allowed(db, replica):  # noqa: F811
    ca_id, serial = _an_issued_certificate(db)
    _revoke_on(replica, serial)  # only the replica says "revoked"
    rdb = Database(make_engine(PG_URL), make_read_engine(replica), read_max_lag=60.0)
    try:
        default = StatusReader(rdb)  # GOVCA_OCSP_REPLICA_MAX_LAG unset: primary only
        assert default.statuses(ca_id, [serial])[serial][0] is None
        on = StatusReader(rdb, replica_max_lag=2.0)
        assert on.statuses(ca_id, [serial])[serial][1] == "keyCompromise"
        # the read after a revocation asks the primary by name
        assert on.statuses(ca_id, [serial], primary=True)[serial][0] is None
        # a replica measured 10 s behind is beyond the OCSP bound: the primary answers
        rdb._lag = (10.0, time.monotonic())
        assert on.statuses(ca_id, [serial])[serial][0] is None
        default.close(), on.close()
    finally:
        rdb.dispose()


@pytest.mark.postgres_only
def test_an_unreachable_replica_leaves_ocsp_on_the_primary(db):
    ca_id, serial = _an_issued_certificate(db)
    dead = f"postgresql+psycopg://govca@127.0.0.1:{free_port()}/govca"
    rdb = Database(make_engine(PG_URL), make_read_engine(dead), read_max_lag=None)
    try:
        reader = StatusReader(rdb, replica_max_lag=2.0)
        assert reader.statuses(ca_id, [serial])[serial][0] is None  # answered from the primary
        assert rdb.replica_engine(2.0) is None  # left alone for a while
        reader.close()
    finally:
        rdb.dispose()


def test_the_ocsp_replica_setting(tmp_path):
    base = {"GOVCA_INSTANCE": str(tmp_path), "GOVCA_DATABASE_URL": PG}
    assert Settings.from_env(base).ocsp_replica_max_lag is None
    with_replica = {**base, "GOVCA_READ_DATABASE_URL": "postgresql+psycopg://r@h/govca"}
    s = Settings.from_env({**with_replica, "GOVCA_OCSP_REPLICA_MAX_LAG": "1.5"})
    assert s.ocsp_replica_max_lag == 1.5
    for bad in ("abc", "-1", "31", "nan"):
        with pytest.raises(ConfigurationError, match="from 0 to 30"):
            Settings.from_env({**with_replica, "GOVCA_OCSP_REPLICA_MAX_LAG": bad})
    with pytest.raises(ConfigurationError, match="needs a replica"):
        Settings.from_env({**base, "GOVCA_OCSP_REPLICA_MAX_LAG": "1"})


def test_the_responder_takes_the_setting(db, clock, key_store):
    class Svc:
        settings = Settings.from_env({"GOVCA_INSTANCE": "/tmp", "GOVCA_DATABASE_URL": PG,
                                      "GOVCA_READ_DATABASE_URL": "postgresql+psycopg://r@h/g",
                                      "GOVCA_OCSP_REPLICA_MAX_LAG": "2"})
    assert ocsp_settings(Svc).replica_max_lag == 2.0
    assert ocsp_settings(None) == OcspSettings()
    svc = OcspService(db, key_store, clock, ocsp_settings(Svc))
    assert svc.reader.replica_max_lag == 2.0
    svc.reader.close()
