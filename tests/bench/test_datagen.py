"""bench/datagen.py on the test database (SQLite or PostgreSQL): the right shape."""
from __future__ import annotations

from sqlalchemy import func, select

from bench import datagen
from ca.store.models import Certificate, RaDomain, Subscriber
from tests.conftest import database_url


def test_datagen_shape(db, tmp_path, clock):
    with db.transaction() as s:
        before = s.execute(select(func.count()).select_from(Certificate)).scalar()
        subs_before = s.execute(select(func.count()).select_from(Subscriber)).scalar()
    n = 2000
    res = datagen.generate(database_url(tmp_path), n, progress=False, now=clock.now())
    assert res["certificates"] == n and sum(res["per_province"].values()) == n
    assert len(res["per_province"]) == 34
    with db.transaction() as s:
        total = s.execute(select(func.count()).select_from(Certificate)).scalar() - before
        revoked = s.execute(select(func.count()).select_from(Certificate).where(
            Certificate.der == datagen.DATAGEN_DER,
            Certificate.revoked_at.is_not(None))).scalar()
        per = dict(s.execute(
            select(RaDomain.code, func.count(Certificate.id))
            .join(Subscriber, Subscriber.domain_id == RaDomain.id)
            .join(Certificate, Certificate.subscriber_id == Subscriber.id)
            .where(Certificate.der == datagen.DATAGEN_DER)
            .group_by(RaDomain.code)).all())
        n_serials = s.execute(select(func.count(func.distinct(Certificate.serial))).where(
            Certificate.der == datagen.DATAGEN_DER)).scalar()
        subs = s.execute(select(func.count()).select_from(Subscriber)).scalar() - subs_before
        kinds = set(s.execute(select(RaDomain.kind).where(
            RaDomain.code.in_(list(per)))).scalars())
        names = s.execute(select(Subscriber.full_name).where(
            Subscriber.id > subs_before).limit(50)).scalars().all()
    assert total == n
    assert revoked == n // 20  # 5 %
    assert per == res["per_province"]  # counts per province as planned, all 34 provinces
    assert kinds == {"province"} and len(per) == 34
    assert per["hanoi"] == max(per.values()) > min(per.values())  # weighted, not uniform
    assert n_serials == n
    assert res["subscribers"] == subs and n / 1.4 < subs < n
    assert all(len(x.split()) == 3 for x in names)
    assert any("Nguyễn" in x or "Trần" in x or "Lê" in x for x in names)
