"""The dry run: what a plan would change, nothing written but the figures on the plan row."""
from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from sqlalchemy.orm import Session

from ca.clock import Clock
from ca.ra.roles import Caller
from ca.reorg import impact
from ca.reorg.plans import get_plan, items_of
from ca.store.models import RaDomain

DEFAULT_SHARE = 0.5


def figures(session: Session, plan_id: int, *, now, hsm_rate: float | None,
            share: float = DEFAULT_SHARE) -> dict[str, Any]:
    items = items_of(session, plan_id)
    rows = impact.affected(session, items, now)
    kinds: Counter = Counter()
    by_target: dict[str, Counter] = {}
    names = impact.domain_names(session)
    item_target = {i.id: impact.target_label(session, i, names) for i in items}
    for r in rows:
        cat = {"person": "personal", "organization": "seal"}.get(r.subscriber_kind, "device")
        kinds[f"{cat}_{r.action}"] += 1
        label = item_target.get(r.item_id) or "?"
        by_target.setdefault(label, Counter())[r.action] += 1
    changes = sum(1 for r in rows if r.action == "change")
    domains_merged = [names.get(d) for i in items if i.kind == "merge_province"
                      for d in i.source_ids]
    rate = hsm_rate if hsm_rate and hsm_rate > 0 else None
    return {
        "items": len(items),
        "subscribers": impact.subscribers_affected(session, items),
        "subscribers_with_certificates": len({r.subscriber_id for r in rows}),
        "certificates": len(rows),
        "personal_change": kinds["personal_change"],
        "personal_revoke": kinds["personal_revoke"],
        "seal_change": kinds["seal_change"],
        "seal_revoke": kinds["seal_revoke"],
        "device_change": kinds["device_change"],
        "device_revoke": kinds["device_revoke"],
        "changes": changes,
        "revocations": len(rows),
        "signatures": changes,
        "hsm_rate": round(rate, 1) if rate else None,
        **rate_provenance(rate),
        "share": share,
        "estimated_seconds": round(changes / (rate * share), 3) if rate else None,
        "domains_merged": domains_merged,
        "by_target": [{"target": k, "change": v["change"], "revoke": v["revoke"]}
                      for k, v in sorted(by_target.items())],
        "at": now.isoformat(),
    }


def rate_provenance(rate) -> dict[str, Any]:
    """When and how the HSM rate of the estimate was measured, so a reused (cached) measurement
    is visible: a MeasuredRate (ca.reorg.throttle.ca_sign_rate) carries its time; a plain
    number was given by the operator (`--hsm-rate`) or the caller."""
    measured_at = getattr(rate, "measured_at", None) if rate else None
    if measured_at is None:
        return {"hsm_rate_source": "given" if rate else None, "hsm_rate_measured_at": None,
                "hsm_rate_age_seconds": None}
    age = None
    try:
        age = max(0, round((dt.datetime.now(dt.timezone.utc) - measured_at).total_seconds()))
    except TypeError:
        pass
    return {"hsm_rate_source": "cached" if getattr(rate, "cached", False) else "measured",
            "hsm_rate_measured_at": measured_at.isoformat(), "hsm_rate_age_seconds": age}


def dry_run(session: Session, caller: Caller, plan_id: Any, *, clock: Clock,
            hsm_rate: float | None, share: float = DEFAULT_SHARE) -> dict[str, Any]:
    """Figures for the plan as it stands now, kept on the plan (no audit: nothing changes)."""
    plan = get_plan(session, caller, plan_id)
    out = figures(session, plan.id, now=clock.now(), hsm_rate=hsm_rate, share=share)
    out["plan_version"] = plan.version
    out["content_hash"] = plan.content_hash
    plan.dry_run, plan.hsm_rate = out, (float(hsm_rate) if hsm_rate else None)
    return out


def domain_label(session: Session, domain_id: int | None) -> str:
    if domain_id is None:
        return "central"
    d = session.get(RaDomain, domain_id)
    return d.name if d else str(domain_id)
