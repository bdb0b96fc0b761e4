"""Reorganisation plans (issue 5): the plan, its items, per-certificate work items and the job."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import (JSON, BigInteger, CheckConstraint, Float, ForeignKey, Index, Integer,
                        String, Text, UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column

from ca.store.base import Base

PLAN_STATES = ("draft", "approved", "running", "paused", "cancelled", "done")
ITEM_KINDS = ("merge_province", "absorb_unit", "merge_units_new", "rename")
WORK_STATES = ("pending", "issuing", "done", "failed", "cancelled")


class ReorgPlan(Base):
    """A described reorganisation. `version`/`content_hash` change on every edit; an approval
    holds only for the hash it was given for (approved_hash)."""

    __tablename__ = "reorg_plan"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    domain_id: Mapped[Optional[int]] = mapped_column(ForeignKey("ra_domain.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="draft")
    version: Mapped[int] = mapped_column(Integer, default=1)
    content_hash: Mapped[str] = mapped_column(String(64))
    reason: Mapped[Optional[str]] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    approved_by: Mapped[Optional[str]] = mapped_column(String(128))
    approved_at: Mapped[Optional[dt.datetime]]
    approved_hash: Mapped[Optional[str]] = mapped_column(String(64))
    hsm_rate: Mapped[Optional[float]] = mapped_column(Float)  # signatures/s at the last dry run
    dry_run: Mapped[Optional[dict]] = mapped_column(JSON)  # figures of the last dry run

    __table_args__ = (
        CheckConstraint("state IN ('draft','approved','running','paused','cancelled','done')",
                        name="state"),
        CheckConstraint("approved_by IS NULL OR approved_by <> created_by", name="two_person"),
    )


class ReorgItem(Base):
    """One step of a plan: merge_province (domains), absorb_unit / merge_units_new / rename
    (organisations). Ids refer to ra_domain for merge_province, to organization otherwise;
    a merge_province target that does not exist yet is named by target_name."""

    __tablename__ = "reorg_item"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("reorg_plan.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(24))
    source_ids: Mapped[list] = mapped_column(JSON)
    target_id: Mapped[Optional[int]] = mapped_column(Integer)
    target_name: Mapped[Optional[str]] = mapped_column(String(200))
    parent_id: Mapped[Optional[int]] = mapped_column(Integer)

    __table_args__ = (
        UniqueConstraint("plan_id", "position"),
        CheckConstraint("kind IN ('merge_province','absorb_unit','merge_units_new','rename')",
                        name="kind"),
    )


class ReorgWork(Base):
    """One certificate to change or revoke. UNIQUE(plan, subscriber, old serial): a plan
    touches a certificate once, whatever happens to the worker."""

    __tablename__ = "reorg_work"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("reorg_plan.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("reorg_item.id"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscriber.id"), index=True)
    old_serial: Mapped[str] = mapped_column(String(40))
    profile: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(8))  # change | revoke
    reason: Mapped[str] = mapped_column(String(32))  # revocation reason of the old certificate
    state: Mapped[str] = mapped_column(String(16), default="pending")
    new_serial: Mapped[Optional[str]] = mapped_column(String(40))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[Optional[str]] = mapped_column(Text)
    claimed_at: Mapped[Optional[dt.datetime]]
    done_at: Mapped[Optional[dt.datetime]]

    __table_args__ = (
        UniqueConstraint("plan_id", "subscriber_id", "old_serial"),
        CheckConstraint("action IN ('change','revoke')", name="action"),
        CheckConstraint("state IN ('pending','issuing','done','failed','cancelled')",
                        name="state"),
        Index("ix_reorg_work_plan_state", "plan_id", "state", "id"),
    )


class ReorgJob(Base):
    """The execution of a plan: phase, counters, lease (one worker at a time) and throttle."""

    __tablename__ = "reorg_job"
    plan_id: Mapped[int] = mapped_column(ForeignKey("reorg_plan.id"), primary_key=True)
    phase: Mapped[str] = mapped_column(String(16), default="structure")  # structure | certificates | finished
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    share: Mapped[float] = mapped_column(Float, default=0.5)
    hsm_rate: Mapped[Optional[float]] = mapped_column(Float)
    batch_size: Mapped[int] = mapped_column(Integer, default=50)
    lease_owner: Mapped[Optional[str]] = mapped_column(String(200))
    lease_until: Mapped[Optional[dt.datetime]]
    heartbeat_at: Mapped[Optional[dt.datetime]]
    started_at: Mapped[Optional[dt.datetime]]
    finished_at: Mapped[Optional[dt.datetime]]
    runs: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[Optional[str]] = mapped_column(Text)
