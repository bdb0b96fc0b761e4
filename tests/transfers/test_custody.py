"""Custody history in the core: record_custody_change (also the entry point for bulk
reorganisations), periods bounding a former domain's reads, and races: two releases or two
acceptances at the same moment leave exactly one winner."""
from __future__ import annotations

import threading

from sqlalchemy import select, update

from ca.errors import CAError, NotFound
from ca.ra import transfers
from ca.ra.scope import Scope, within
from ca.store.models import Subscriber
from ca.store.models_transfer import SubscriberCustody, SubscriberTransfer
from tests.ra.conftest import domain_id, staff_id, units
from tests.transfers.conftest import events


def test_record_custody_change_in_bulk(db, clock, caller_of):
    """What a reorganisation does for many people: move them, then record the custody with one
    call each (no event each: the bulk move is audited by its caller)."""
    hn, hp = domain_id(db, "hanoi"), domain_id(db, "haiphong")
    hp_unit = units(db, "haiphong")[0]
    people = [staff_id(db, f"staff.hanoi.{i}") for i in (1, 2, 3)]
    t0 = clock.now()
    at = clock.advance(days=3)
    with db.transaction() as s:
        for sid in people:
            sub = s.get(Subscriber, sid)
            old_unit = sub.organization_id
            sub.domain_id, sub.organization_id = hp, hp_unit
            # moved first: the old unit is passed, the new one is read from the subscriber
            transfers.record_custody_change(s, sid, hn, hp, at, "system:reorg",
                                            from_organization_id=old_unit, audit_event=False)
    assert events(db, "subscriber.custody") == []
    with db.transaction() as s:
        for sid in people:
            rows = transfers.custody_history(s, sid)
            assert [(r.domain_id, r.valid_to, r.reason) for r in rows] == [
                (hn, at, "created"), (hp, None, "reorg")]
            assert rows[0].valid_from <= t0 and rows[1].organization_id == hp_unit
            assert rows[0].organization_id is not None  # the Hà Nội unit they were in
    # one more with an event
    at2 = clock.advance(days=1)
    with db.transaction() as s:
        transfers.record_custody_change(s, people[0], hp, hn, at2, "system:reorg")
    [ev] = events(db, "subscriber.custody")
    assert ev.domain_id == hn and ev.target == f"subscriber:{people[0]}"
    # Hà Nội had people[0] in two periods; Hải Phòng in one
    hanoi = caller_of("ra.hanoi")
    with db.transaction() as s:
        assert len(Scope(s, hanoi).custody_periods(people[0])) == 1  # the open one is not "former"
        assert Scope(s, hanoi).subscriber_history(people[1])[1] == [
            (transfers.custody_history(s, people[1])[0].valid_from, at)]


def test_custody_history_of_someone_never_moved(db, caller_of):
    sid = staff_id(db, "staff.quangninh.2")
    hanoi = caller_of("ra.hanoi")
    with db.transaction() as s:
        [row] = transfers.custody_history(s, sid)
        assert row.valid_to is None and row.domain_id == s.get(Subscriber, sid).domain_id
        assert s.execute(select(SubscriberCustody)).first() is None  # nothing stored
        try:
            Scope(s, hanoi).subscriber_history(sid)
            raise AssertionError("a third province must not read the history")
        except NotFound:
            pass


def test_within_periods():
    import datetime as dt
    t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    d = dt.timedelta(days=1)
    periods = [(t, t + d), (t + 3 * d, t + 4 * d)]
    assert within(periods, t) and within(periods, t + 3 * d)
    assert not within(periods, t + d) and not within(periods, t + 2 * d)
    assert not within(periods, t + 4 * d) and not within(periods, None)
    assert within(None, t + 100 * d)


def _race(fn, n=2):
    barrier, out = threading.Barrier(n), []

    def run(i):
        barrier.wait()
        try:
            out.append(("ok", fn(i)))
        except CAError as exc:
            out.append(("err", exc.code))
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return sorted(out, key=lambda x: x[0])


def test_two_releases_at_once(db, services, caller_of, officers):
    sid = staff_id(db, "staff.hanoi.2")
    callers = [caller_of("ra.hanoi"), caller_of("ra.hanoi.2")]
    targets = [units(db, "quangninh")[0], units(db, "haiphong")[0]]

    def release(i):
        with db.transaction() as s:
            return transfers.transfer(s, services.clock, callers[i], sid, targets[i],
                                      services.profiles).id
    out = _race(release)
    assert [k for k, _ in out] == ["err", "ok"], out
    assert out[0][1] == "transfer_pending"
    with db.transaction() as s:
        assert len(s.execute(select(SubscriberTransfer)).scalars().all()) == 1


def test_two_acceptances_at_once(db, services, caller_of, officers):
    sid = staff_id(db, "staff.hanoi.2")
    with db.transaction() as s:
        tid = transfers.transfer(s, services.clock, caller_of("ra.hanoi"), sid,
                                 units(db, "quangninh")[0], services.profiles).id
    callers = [caller_of("ra.quangninh"), caller_of("ra.quangninh.2")]

    def accept(i):
        with db.transaction() as s:
            return transfers.accept(s, services.clock, callers[i], tid,
                                    services.profiles).transfer.accepted_by
    out = _race(accept)
    assert [k for k, _ in out] == ["err", "ok"], out
    assert out[0][1] == "transfer_accepted"
    with db.transaction() as s:
        rows = s.execute(select(SubscriberCustody).where(
            SubscriberCustody.subscriber_id == sid)).scalars().all()
        assert len(rows) == 2
    assert len(events(db, "transfer.accept")) == 2  # one per domain, from the single winner


def test_subscriber_moved_by_someone_else_meanwhile(db, services, caller_of, officers):
    """A release whose person was moved away (a bulk reorganisation) cannot be accepted."""
    sid = staff_id(db, "staff.hanoi.2")
    with db.transaction() as s:
        tid = transfers.transfer(s, services.clock, caller_of("ra.hanoi"), sid,
                                 units(db, "quangninh")[0], services.profiles).id
    hp = domain_id(db, "haiphong")
    with db.transaction() as s:
        s.execute(update(Subscriber).where(Subscriber.id == sid).values(domain_id=hp))
    qn = caller_of("ra.quangninh")
    with db.transaction() as s:
        try:
            transfers.accept(s, services.clock, qn, tid, services.profiles)
            raise AssertionError("accepted a stale release")
        except CAError as exc:
            assert exc.code == "stale"
