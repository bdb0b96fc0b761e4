"""Vietnamese working days: due times of requests (weekends and a holiday calendar)."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from ca.clock import require_aware
from ca.store.models_ra import RaHoliday

VN_TZ = dt.timezone(dt.timedelta(hours=7), "ICT")  # Vietnam keeps UTC+7 all year
WORKDAY_START = dt.time(8, 0)
# DOMAIN.md: 3 working days for a new certificate, renewal, change and revocation; 1 for restore.
DEADLINE_DAYS = {"issue": 3, "renew": 3, "change": 3, "revoke": 3, "restore": 1}

# Public holidays of 2026 (Labour Code 2019 art. 112 and the Government's 2026 schedule),
# loaded by the demo; operators maintain the table for later years.
HOLIDAYS_2026 = [
    (dt.date(2026, 1, 1), "Tết Dương lịch"),
    *[(dt.date(2026, 2, d), "Tết Nguyên đán") for d in range(16, 21)],
    (dt.date(2026, 4, 27), "Giỗ Tổ Hùng Vương (nghỉ bù)"),
    (dt.date(2026, 4, 30), "Ngày Giải phóng miền Nam"),
    (dt.date(2026, 5, 1), "Quốc tế Lao động"),
    (dt.date(2026, 9, 1), "Quốc khánh"),
    (dt.date(2026, 9, 2), "Quốc khánh"),
]


class WorkingCalendar:
    """Monday to Friday, except the listed holidays."""

    def __init__(self, holidays: Iterable[dt.date] = ()) -> None:
        self.holidays = frozenset(holidays)

    @classmethod
    def load(cls, session: Session) -> "WorkingCalendar":
        return cls(session.execute(select(RaHoliday.day)).scalars().all())

    def is_working_day(self, day: dt.date) -> bool:
        return day.weekday() < 5 and day not in self.holidays

    def next_working_day(self, day: dt.date) -> dt.date:
        day += dt.timedelta(days=1)
        while not self.is_working_day(day):
            day += dt.timedelta(days=1)
        return day

    def add_working_days(self, start: dt.datetime, days: int) -> dt.datetime:
        """The same local time `days` working days later. A request received on a day off
        counts from 08:00 of the next working day."""
        local = require_aware(start, "start").astimezone(VN_TZ)
        day, time = local.date(), local.timetz().replace(tzinfo=None)
        if not self.is_working_day(day):
            day, time = self.next_working_day(day), WORKDAY_START
        for _ in range(days):
            day = self.next_working_day(day)
        return dt.datetime.combine(day, time, tzinfo=VN_TZ).astimezone(dt.timezone.utc)

    def due_at(self, request_type: str, submitted_at: dt.datetime) -> dt.datetime:
        return self.add_working_days(submitted_at, DEADLINE_DAYS[request_type])


def seed_holidays(session: Session, holidays=HOLIDAYS_2026) -> int:
    existing = set(session.execute(select(RaHoliday.day)).scalars())
    added = 0
    for day, name in holidays:
        if day not in existing:
            session.add(RaHoliday(day=day, name=name))
            added += 1
    session.flush()
    return added
