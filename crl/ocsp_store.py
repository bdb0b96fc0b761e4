"""Certificate status reads and race-free writes of pre-signed OCSP responses."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import bindparam, create_engine, select

from ca.store.database import Database, is_transient
from ca.store.models import Certificate
from ca.store.models_crl import OcspResponse

Status = tuple  # (revoked_at | None, reason | None)


def statuses(db: Database, ca_id: int, serial_hexes: list[str]) -> dict[str, Status]:
    """The status of each serial that the CA released ('issued'); absent serials are unknown."""
    if not serial_hexes:
        return {}
    with db.transaction() as s:
        rows = s.execute(select(Certificate.serial, Certificate.revoked_at,
                                Certificate.revocation_reason).where(
            Certificate.ca_id == ca_id, Certificate.serial.in_(serial_hexes),
            Certificate.state == "issued")).all()
    return {serial: (revoked_at, reason) for serial, revoked_at, reason in rows}


class StatusReader:
    """The OCSP read path: two small Core queries, no ORM session. On SQLite its own engine
    without the BEGIN IMMEDIATE of the writers (ca.store.database): in WAL mode readers never
    block each other or the writers."""

    _statuses = select(Certificate.serial, Certificate.revoked_at,
                       Certificate.revocation_reason).where(
        Certificate.ca_id == bindparam("ca_id"),
        Certificate.serial.in_(bindparam("serials", expanding=True)),
        Certificate.state == "issued")
    _presigned = select(OcspResponse.der, OcspResponse.this_update, OcspResponse.next_update
                        ).where(OcspResponse.ca_id == bindparam("ca_id"),
                                OcspResponse.serial == bindparam("serial"),
                                OcspResponse.next_update > bindparam("now"))

    def __init__(self, db: Database, *, replica_max_lag: float | None = None) -> None:
        engine = db.engine
        if engine.dialect.name == "sqlite":
            engine = create_engine(engine.url, connect_args={"timeout": 30})
        self.engine = engine
        self.db = db
        self.replica_max_lag = replica_max_lag  # None: never the replica

    def _rows(self, stmt, params: dict, *, first: bool = False, primary: bool = False):
        """Run one read on the replica when allowed (configured, reachable, lag within the
        bound), else on the primary; a replica that fails is left for the primary."""
        replica = None
        if self.replica_max_lag is not None and not primary:
            replica = self.db.replica_engine(self.replica_max_lag)
        if replica is not None:
            try:
                with replica.connect() as c:
                    result = c.execute(stmt, params)
                    return result.first() if first else result.all()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self.db.replica_failed(exc)
        with self.engine.connect() as c:
            result = c.execute(stmt, params)
            return result.first() if first else result.all()

    def statuses(self, ca_id: int, serial_hexes: list[str], *,
                 primary: bool = False) -> dict[str, Status]:
        if not serial_hexes:
            return {}
        rows = self._rows(self._statuses, {"ca_id": ca_id, "serials": serial_hexes},
                          primary=primary)
        return {serial: (revoked_at, reason) for serial, revoked_at, reason in rows}

    def presigned(self, ca_id: int, serial_hex: str, now: dt.datetime):
        return self._rows(self._presigned, {"ca_id": ca_id, "serial": serial_hex, "now": now},
                          first=True)

    def close(self) -> None:
        self.engine.dispose()


def _upsert(session, rows: list[dict]) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(OcspResponse).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["ca_id", "serial"],
        set_={c: stmt.excluded[c] for c in ("responder_id", "status", "der", "this_update",
                                            "next_update")})
    session.execute(stmt)


def store_responses(db: Database, ca_id: int, responder_id: int, items: list) -> int:
    """Store signed answers [(serial_hex, SingleStatus, der)], but only those whose status still
    holds: the certificate rows are locked first (FOR UPDATE), so a revocation either commits
    before (and its answer is dropped here) or waits and then deletes what was written."""
    if not items:
        return 0
    with db.transaction() as s:
        locked = {serial: revoked_at for serial, revoked_at in s.execute(
            select(Certificate.serial, Certificate.revoked_at).where(
                Certificate.ca_id == ca_id,
                Certificate.serial.in_([i[0] for i in items])).with_for_update())}
        rows = []
        for serial_hex, single, der in items:
            if serial_hex not in locked:
                continue
            if (single.status == "revoked") != (locked[serial_hex] is not None):
                continue  # changed while we signed; the next read signs again
            rows.append({"ca_id": ca_id, "serial": serial_hex, "responder_id": responder_id,
                         "status": single.status, "der": der,
                         "this_update": single.this_update, "next_update": single.next_update})
        if rows:
            _upsert(s, rows)
        return len(rows)


def expire_all(db: Database, ca_id: int, now: dt.datetime) -> None:
    """Make every pre-signed answer of a CA due for refresh (e.g. after a responder change)."""
    with db.transaction() as s:
        s.query(OcspResponse).filter(OcspResponse.ca_id == ca_id).update(
            {OcspResponse.next_update: now})
