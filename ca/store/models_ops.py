"""Operations tables: the last runs of every scheduler job (shown on the operations page)."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import BigInteger, Boolean, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ca.store.base import Base


class SchedulerRun(Base):
    """One run of a scheduler job: when it started and finished, whether it succeeded, and a
    short message (a result summary or the error's type; never secrets)."""

    __tablename__ = "scheduler_run"
    __table_args__ = (Index("ix_scheduler_run_job_started", "job", "started_at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(64))
    holder: Mapped[str] = mapped_column(String(128), default="")
    started_at: Mapped[dt.datetime]
    finished_at: Mapped[Optional[dt.datetime]]
    ok: Mapped[Optional[bool]] = mapped_column(Boolean)
    message: Mapped[str] = mapped_column(String(500), default="")
