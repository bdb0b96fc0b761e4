"""Vietnamese working days: weekends, the holiday calendar, requests received on a day off."""
from __future__ import annotations

import datetime as dt

from ca.ra.workdays import HOLIDAYS_2026, VN_TZ, WorkingCalendar

CAL = WorkingCalendar(d for d, _ in HOLIDAYS_2026)


def local(*args):
    return dt.datetime(*args, tzinfo=VN_TZ)


def test_three_working_days_skip_the_weekend():
    due = CAL.due_at("issue", local(2026, 6, 4, 10, 30))  # Thursday
    assert due == local(2026, 6, 9, 10, 30)               # Tuesday
    assert due.tzinfo == dt.timezone.utc


def test_restore_is_one_working_day():
    assert CAL.due_at("restore", local(2026, 6, 5, 16, 0)) == local(2026, 6, 8, 16, 0)


def test_holidays_do_not_count():
    # Thursday 30 April and Friday 1 May 2026 are holidays
    assert CAL.due_at("revoke", local(2026, 4, 29, 9, 0)) == local(2026, 5, 6, 9, 0)
    # Tết 2026: Monday 16 to Friday 20 February off
    assert CAL.due_at("issue", local(2026, 2, 13, 9, 0)) == local(2026, 2, 25, 9, 0)


def test_request_on_a_day_off_counts_from_the_next_working_morning():
    assert CAL.due_at("issue", local(2026, 6, 6, 22, 0)) == local(2026, 6, 11, 8, 0)  # Saturday
    assert CAL.due_at("restore", local(2026, 9, 2, 9, 0)) == local(2026, 9, 4, 8, 0)


def test_calendar_is_configurable():
    plain = WorkingCalendar()
    assert plain.due_at("restore", local(2026, 4, 29, 9, 0)) == local(2026, 4, 30, 9, 0)
    custom = WorkingCalendar([dt.date(2026, 6, 8)])
    assert custom.due_at("restore", local(2026, 6, 5, 9, 0)) == local(2026, 6, 9, 9, 0)


def test_utc_input_near_midnight_uses_vietnam_dates():
    # 2026-06-05 18:00 UTC is Saturday 01:00 in Hà Nội: a day off
    start = dt.datetime(2026, 6, 5, 18, 0, tzinfo=dt.timezone.utc)
    assert CAL.due_at("restore", start) == local(2026, 6, 9, 8, 0)
