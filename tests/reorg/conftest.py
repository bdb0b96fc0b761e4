"""Fixtures of the reorganisation tests: callers, a small world of old provinces, a runner."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from ca.ra.roles import Caller
from ca.reorg.executor import Runner
from ca.store.models_ra import RaUser
from tests.reorg import world

HSM_RATE = 800.0  # a fixed figure for the in-process tests (the big test measures it)


def caller_of(db, username: str) -> Caller:
    with db.transaction() as s:
        return Caller.of(s.execute(select(RaUser).where(RaUser.username == username)).scalar_one())


@pytest.fixture
def operator(db):
    return caller_of(db, "operator")


@pytest.fixture
def preparer():
    return Caller.system("cli")


@pytest.fixture
def small_world(db, key_store, clock, profiles):
    """Hà Giang (absorbed by Tuyên Quang), Tuyên Quang, Bắc Kạn (absorbed by Thái Nguyên),
    Thái Nguyên: 24 staff and 8 seals, each with one valid certificate."""
    return world.populate(db, key_store, clock, profiles, n_persons=24, provinces=[
        "Tỉnh Hà Giang", "Tỉnh Tuyên Quang", "Tỉnh Bắc Kạn", "Tỉnh Thái Nguyên"])


@pytest.fixture
def runner_for(db, issuance, clock):
    def make(**kw):
        kw.setdefault("hsm_rate", HSM_RATE)
        kw.setdefault("batch", 5)
        return Runner(db, issuance, clock, **kw)
    return make
