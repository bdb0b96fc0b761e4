"""`govca reorg ...`: reorganisation plans (2025 merger): load, dry run, approve, run (worker)."""
from __future__ import annotations

import json
import time

import click
from sqlalchemy import select

from ra_portal.cli.common import CLIError, main, read_limited, with_services


@main.group()
def reorg():
    """Reorganisation plans: merge provinces and units, change certificates at scale."""


def _caller(svc, username: str | None):
    from ca.ra.roles import Caller
    from ca.store.models_ra import RaUser
    if not username:
        return Caller.system("cli")
    with svc.db.transaction() as s:
        user = s.execute(select(RaUser).where(RaUser.username == username)).scalar_one_or_none()
        if user is None or not user.active:
            raise CLIError(f"no active user {username!r}")
        return Caller.of(user)


def _rate(svc, override: float | None) -> float:
    if override:
        return override
    from ca.reorg.throttle import ca_sign_rate
    return ca_sign_rate(svc.db, svc.keys)


def _fmt_seconds(sec) -> str:
    if sec is None:
        return "?"
    sec = int(sec)
    return f"{sec // 3600}h{sec % 3600 // 60:02d}m{sec % 60:02d}s" if sec >= 3600 \
        else f"{sec // 60}m{sec % 60:02d}s"


@reorg.command("load-csv")
@click.argument("file")
@click.option("--name", required=True, help="Name of the plan.")
@click.option("--skip-missing", is_flag=True,
              help="Skip old provinces that are not RA domains (they are listed).")
@click.option("--as", "as_user", help="Portal user who prepares the plan (default: the console).")
@with_services
def load_csv(svc, file, name, skip_missing, as_user):
    """Create a draft plan from an old_unit,new_unit CSV ('builtin' = the 2025 63->34 map)."""
    from ca.reorg import csvmap
    from ca.reorg.plans import create_plan
    text = csvmap.builtin_csv() if file == "builtin" else \
        read_limited(file, limit=256 * 1024, what="CSV file").decode("utf-8", "replace")
    caller = _caller(svc, as_user)
    with svc.db.transaction() as s:
        items, skipped = csvmap.items_from_csv(s, text, skip_missing=skip_missing)
        plan = create_plan(s, caller, name=name, items=items, clock=svc.clock,
                           reason="2025 province merger (CSV)")
        plan_id, h = plan.id, plan.content_hash
    click.echo(f"plan {plan_id} created (draft): {len(items)} merges, hash {h[:16]}")
    for old in skipped:
        click.echo(f"skipped (not an RA domain): {old}")


@reorg.command("show")
@click.argument("plan_id", type=int)
@with_services
def show(svc, plan_id):
    """The plan, its items and the last dry run."""
    from ca.ra.roles import Caller
    from ca.reorg.impact import domain_names
    from ca.reorg.plans import get_plan, items_of
    with svc.db.transaction() as s:
        plan = get_plan(s, Caller.system("cli"), plan_id)
        names = domain_names(s)
        click.echo(f"plan {plan.id}: {plan.name} [{plan.state}] v{plan.version} "
                   f"hash {plan.content_hash[:16]}")
        click.echo(f"  prepared by {plan.created_by}; approved by {plan.approved_by or '-'}")
        for it in items_of(s, plan.id):
            if it.kind == "merge_province":
                src = ", ".join(names.get(d, str(d)) for d in it.source_ids)
                tgt = names.get(it.target_id) if it.target_id else f"{it.target_name} (new)"
            else:
                src = ", ".join(map(str, it.source_ids))
                tgt = it.target_id or it.target_name
            click.echo(f"  {it.position:3d}. {it.kind}: {src} -> {tgt}")
        if plan.dry_run:
            click.echo("  last dry run: " + json.dumps(plan.dry_run, ensure_ascii=False))


@reorg.command("dry-run")
@click.argument("plan_id", type=int)
@click.option("--share", type=click.FloatRange(0.01, 1.0), default=0.5, show_default=True)
@click.option("--hsm-rate", type=float, help="Use this signing rate instead of measuring it.")
@click.option("--json", "as_json", is_flag=True)
@with_services
def dry_run_cmd(svc, plan_id, share, hsm_rate, as_json):
    """What the plan would change, and how long it would take at the measured HSM rate."""
    from ca.ra.roles import Caller
    from ca.reorg.dryrun import dry_run
    rate = _rate(svc, hsm_rate)
    with svc.db.transaction() as s:
        out = dry_run(s, Caller.system("cli"), plan_id, clock=svc.clock, hsm_rate=rate,
                      share=share)
    if as_json:
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    click.echo(f"subscribers affected: {out['subscribers']}")
    click.echo(f"certificates: {out['certificates']} (personal changed {out['personal_change']}"
               f", seals changed {out['seal_change']}, seals revoked {out['seal_revoke']}, "
               f"devices changed {out['device_change']})")
    source = {"cached": f"measured at {out.get('hsm_rate_measured_at')}, reused",
              "given": "given with --hsm-rate"}.get(out.get("hsm_rate_source"), "measured now")
    click.echo(f"HSM: {out['hsm_rate']} signatures/s ({source}); share {share:.0%}; "
               f"estimated {_fmt_seconds(out['estimated_seconds'])} for "
               f"{out['signatures']} signatures")


@reorg.command("approve")
@click.argument("plan_id", type=int)
@click.option("--as", "as_user", required=True, help="The approving user (not the preparer).")
@with_services
def approve(svc, plan_id, as_user):
    """Second-person approval of the plan as it is now."""
    from ca.reorg.plans import approve_plan
    caller = _caller(svc, as_user)
    with svc.db.transaction() as s:
        plan = approve_plan(s, caller, plan_id, clock=svc.clock)
        click.echo(f"plan {plan.id} approved by {plan.approved_by} (hash {plan.approved_hash[:16]})")


def _bar(total):
    from tqdm import tqdm
    return tqdm(total=total, unit="cert", dynamic_ncols=True, smoothing=0.1)


@reorg.command("run")
@click.argument("plan_id", type=int)
@click.option("--follow", is_flag=True, help="Show a progress bar with ETA.")
@click.option("--batch", type=click.IntRange(1, 10000), default=50, show_default=True,
              help="Work items per batch: claimed, issued, revoked and marked done together "
                   "(a pause or cancel takes effect between batches).")
@click.option("--share", type=click.FloatRange(0.01, 1.0), default=0.5, show_default=True,
              help="Share of the measured HSM signing capacity this job may use.")
@click.option("--hsm-rate", type=float, help="Use this signing rate instead of measuring it.")
@click.option("--no-crl", is_flag=True, help="Do not publish a full CRL when the plan is done "
                                             "(the scheduler publishes on its own interval).")
@with_services
def run(svc, plan_id, follow, batch, share, hsm_rate, no_crl):
    """The worker: runs an approved plan; run it again to resume after a stop or a crash."""
    from ca.reorg.executor import Runner
    rate = _rate(svc, hsm_rate)
    bar = {"b": None, "n": 0}

    def progress(info):
        if not follow:
            return
        if bar["b"] is None:
            bar["b"] = _bar(info["total"])
        done = info["done"] + info["failed"] + info["cancelled"]
        bar["b"].update(done - bar["n"])
        bar["n"] = done
        bar["b"].set_postfix(failed=info["failed"], state=info["state"])

    runner = Runner(svc.db, svc.issuance(), svc.clock, hsm_rate=rate, share=share,
                    batch=batch, progress=progress)
    try:
        result = runner.run(plan_id)
    finally:
        if bar["b"] is not None:
            bar["b"].close()
    click.echo(f"plan {plan_id}: {result.state}; {result.done}/{result.total} done, "
               f"{result.failed} failed; this run {result.processed} items in "
               f"{result.seconds:.1f} s = {result.rate:.1f} certificates/s "
               f"(HSM raw {rate:.0f} signatures/s, share {share:.0%})")
    if result.state == "done" and result.processed and not no_crl:
        # Relying parties: OCSP answers from the database at once; a fresh full CRL now
        # carries every revocation of the plan without waiting for the scheduler.
        from crl.publish import CrlPublisher
        info = CrlPublisher(svc.db, svc.keys, svc.clock, svc.settings.base_url,
                            actor="system:reorg").publish("issuing", "full")
        click.echo(f"published CRL {info.crl_number} of issuing ({info.entries} entries)")
    if result.failed:
        click.echo("failures: govca reorg status --failures; retry: govca reorg retry-failed",
                   err=True)


HELP = {"pause": "Pause the worker after its current batch.",
        "resume": "Mark a paused plan runnable (then: govca reorg run).",
        "cancel": "Cancel the items not started; the one in flight is finished.",
        "retry-failed": "Put the failed items back (then: govca reorg run)."}


def _control(name):
    @reorg.command(name, help=HELP[name])
    @click.argument("plan_id", type=int)
    @click.option("--as", "as_user", help="Portal user (default: the console).")
    @with_services
    def cmd(svc, plan_id, as_user):
        from ca.reorg import executor
        fn = {"pause": executor.pause, "cancel": executor.cancel, "resume": executor.resume,
              "retry-failed": executor.retry_failed}[name]
        plan = fn(svc.db, _caller(svc, as_user), plan_id, svc.clock)
        click.echo(f"plan {plan.id}: {plan.state}")
    return cmd


for _name in ("pause", "resume", "cancel", "retry-failed"):
    _control(_name)


@reorg.command("status")
@click.argument("plan_id", type=int)
@click.option("--follow", is_flag=True, help="Watch the progress (bar with ETA) until it stops.")
@click.option("--failures", is_flag=True, help="List the failed items with their reason.")
@click.option("--json", "as_json", is_flag=True)
@with_services
def status(svc, plan_id, follow, failures, as_json):
    """Progress of a plan (counters, rate, ETA, worker heartbeat)."""
    from ca.ra.roles import Caller
    from ca.reorg import executor
    caller = Caller.system("cli")
    info = executor.progress(svc.db, caller, plan_id, svc.clock)
    if follow:
        bar = _bar(info["total"])
        seen = 0
        try:
            while True:
                info = executor.progress(svc.db, caller, plan_id, svc.clock)
                if bar.total != info["total"]:
                    bar.total = info["total"]
                n = info["done"] + info["failed"] + info["cancelled"]
                bar.update(n - seen)
                seen = n
                bar.set_postfix(state=info["state"], failed=info["failed"])
                if info["state"] not in ("running",) or (info["total"] and
                                                         info["pending"] + info["issuing"] == 0):
                    break
                time.sleep(1.0)
        finally:
            bar.close()
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False))
    else:
        click.echo(f"plan {plan_id}: {info['state']} ({info['phase'] or 'not started'}); "
                   f"{info['done']}/{info['total']} done, {info['failed']} failed, "
                   f"{info['pending'] + info['issuing']} left; rate {info['rate'] or '-'}/s; "
                   f"ETA {_fmt_seconds(info['eta_seconds'])}")
    if failures:
        for f in executor.failures(svc.db, caller, plan_id):
            click.echo(f"  subscriber {f['subscriber_id']} ({f['full_name']}), serial "
                       f"{f['serial']}: {f['error']} [attempts {f['attempts']}]")
