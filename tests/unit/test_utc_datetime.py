"""UTCDateTime on SQLite writes its text in one step (ca/store/base.py bind_processor); it must
be exactly what process_bind_param followed by SQLAlchemy's SQLite DATETIME processor writes,
and read back as the same instant."""
from __future__ import annotations

import datetime as dt
import random

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import TypeDecorator

from ca.clock import UTC
from ca.store.base import UTCDateTime


def _composed(dialect):
    """The processors TypeDecorator would chain without the override."""
    inner = UTCDateTime().impl.dialect_impl(dialect).bind_processor(dialect)
    outer = UTCDateTime()

    def process(value):
        return inner(outer.process_bind_param(value, dialect))
    return process


def _values():
    rng = random.Random(11)
    zones = [UTC, dt.timezone(dt.timedelta(hours=7)),
             dt.timezone(dt.timedelta(hours=-9, minutes=-30)), dt.timezone(dt.timedelta(minutes=1))]
    out = [dt.datetime(2026, 11, 23, tzinfo=UTC), dt.datetime(1, 1, 2, tzinfo=UTC),
           dt.datetime(999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
           dt.datetime(9999, 12, 31, 12, tzinfo=UTC), dt.datetime(2050, 1, 1, 6, 59, 59, 1,
                                                                   tzinfo=zones[1])]
    for _ in range(2000):
        out.append(dt.datetime(rng.randint(1900, 2200), rng.randint(1, 12), rng.randint(1, 28),
                               rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59),
                               rng.choice([0, rng.randint(0, 999_999)]),
                               tzinfo=rng.choice(zones)))
    return out


def test_sqlite_text_equals_the_composed_processors():
    dialect = sqlite.dialect()
    fast = UTCDateTime().bind_processor(dialect)
    slow = _composed(dialect)
    assert fast(None) is None
    for value in _values():
        assert fast(value) == slow(value), value


def test_naive_values_are_refused():
    fast = UTCDateTime().bind_processor(sqlite.dialect())
    with pytest.raises(ValueError, match="naive datetime refused"):
        fast(dt.datetime(2026, 1, 1))


def test_round_trip_through_sqlite(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 't.sqlite3'}")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True),
                  Column("at", UTCDateTime()))
    table.metadata.create_all(engine)
    values = _values()[:300]
    with engine.begin() as conn:
        conn.execute(insert(table), [{"id": i, "at": v} for i, v in enumerate(values)])
        back = dict(conn.execute(select(table.c.id, table.c.at)).all())
        # ordering and comparisons in SQL see the same text the old processors wrote
        first = conn.execute(select(table.c.id).order_by(table.c.at).limit(1)).scalar_one()
    assert all(back[i] == v and back[i].tzinfo is UTC for i, v in enumerate(values))
    assert values[first] == min(values)


def test_other_backends_keep_the_decorator_chain():
    from sqlalchemy.dialects import postgresql
    dialect = postgresql.psycopg.dialect()
    proc = UTCDateTime().bind_processor(dialect)
    value = dt.datetime(2026, 11, 23, 7, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    out = proc(value) if proc else UTCDateTime().process_bind_param(value, dialect)
    assert out == dt.datetime(2026, 11, 23, tzinfo=UTC)
    assert isinstance(UTCDateTime(), TypeDecorator)
