"""`govca` commands of the relying-party side: cert revoke/status, crl, ocsp, scheduler."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
from sqlalchemy import select

from ra_portal.cli.common import CLIError, main, with_services
from ra_portal.cli.core import cert


def _time(text: str | None, what: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CLIError(f"{what} must be an ISO 8601 time, e.g. 2026-05-01T08:00:00Z") from None
    if value.tzinfo is None:
        raise CLIError(f"{what} needs a time zone (add Z for UTC)")
    return value.astimezone(dt.timezone.utc)


def _cas(svc, name: str | None) -> list[str]:
    from ca.store.models import CertificateAuthority
    with svc.db.transaction() as s:
        q = select(CertificateAuthority.name).where(CertificateAuthority.status == "active")
        if name:
            q = select(CertificateAuthority.name).where(CertificateAuthority.name == name)
        names = list(s.execute(q.order_by(CertificateAuthority.id)).scalars())
    if not names:
        raise CLIError(f"no CA named {name!r}" if name else "no active CA")
    return names


# --- certificates ----------------------------------------------------------------------------
@cert.command("revoke")
@click.argument("serial")
@click.option("--reason", required=True,
              help="keyCompromise, cACompromise, affiliationChanged, superseded, "
                   "cessationOfOperation or privilegeWithdrawn.")
@click.option("--ca", "ca_name", help="Issuing CA (when a serial exists under several).")
@click.option("--invalidity-date", help="keyCompromise only: when the key is known or suspected "
                                        "to have been compromised (ISO 8601, UTC).")
@click.option("--actor", default="operator:cli", show_default=True, hidden=True)
@with_services
def cert_revoke(svc, serial, reason, ca_name, invalidity_date, actor):
    """Revoke a certificate; OCSP answers the new status at once."""
    from ca.revocation import revoke
    from crl.ocsp import OcspService
    row = revoke(svc.db, svc.clock, serial=serial, reason=reason, actor=actor, ca=ca_name,
                 invalidity_date=_time(invalidity_date, "--invalidity-date"))
    click.echo(f"revoked {row.serial} of {row.ca.name} at {row.revoked_at:%Y-%m-%d %H:%M:%SZ} "
               f"({row.revocation_reason})")
    try:
        OcspService(svc.db, svc.keys, svc.clock).refresh_serial(row.ca.name, row.serial)
    except Exception as exc:  # the stale answer is already deleted: the next read signs anew
        click.echo(f"warning: OCSP answer not re-signed now ({type(exc).__name__}); it will be "
                   f"signed on the next request", err=True)


@cert.command("status")
@click.argument("serial")
@click.option("--ca", "ca_name", default="issuing", show_default=True)
@click.option("--at", "at", help="Past time (ISO 8601); default now.")
@with_services
def cert_status(svc, serial, ca_name, at):
    """Status of a serial at a time, and the full CRL that was current then."""
    from ca.revocation import status_at
    when = _time(at, "--at") or svc.clock.now()
    st = status_at(svc.db, ca=ca_name, serial=serial, at=when)
    click.echo(f"serial:   {st.serial}")
    click.echo(f"at:       {st.at:%Y-%m-%d %H:%M:%SZ}")
    click.echo(f"status:   {st.status}")
    if st.revoked_at:
        click.echo(f"revoked:  {st.revoked_at:%Y-%m-%d %H:%M:%SZ} ({st.reason})")
    if st.invalidity_date:
        click.echo(f"invalid since: {st.invalidity_date:%Y-%m-%d %H:%M:%SZ}")
    click.echo("CRL then: " + (f"number {st.crl_number} of {st.crl_this_update:%Y-%m-%d %H:%M:%SZ}"
                                if st.crl_number else "none published yet"))


# --- CRLs ------------------------------------------------------------------------------------
@main.group()
def crl():
    """Certificate revocation lists."""


@crl.command("publish")
@click.option("--ca", "ca_name", help="One CA (default: every active CA).")
@click.option("--kind", type=click.Choice(["all", "full", "delta"]), default="all",
              show_default=True, help="all = a full CRL and its delta.")
@with_services
def crl_publish(svc, ca_name, kind):
    """Sign and publish CRLs now (the scheduler does it on its interval)."""
    from crl.publish import CrlPublisher
    pub = CrlPublisher(svc.db, svc.keys, svc.clock, svc.settings.base_url, actor="operator:cli")
    for name in _cas(svc, ca_name):
        infos = pub.publish_all(name) if kind == "all" else [pub.publish(name, kind)]
        for i in infos:
            click.echo(f"{name}: {i.kind} CRL number {i.crl_number}, {i.entries} entries, "
                       f"next update {i.next_update:%Y-%m-%d %H:%M:%SZ}")


@crl.command("list")
@click.option("--ca", "ca_name", default="issuing", show_default=True)
@click.option("--limit", type=click.IntRange(1, 10000), default=20, show_default=True)
@with_services
def crl_list(svc, ca_name, limit):
    """Published CRLs, newest first (every CRL is kept)."""
    from crl.publish import CrlPublisher
    for i in CrlPublisher(svc.db, svc.keys, svc.clock, svc.settings.base_url).history(
            ca_name, limit):
        click.echo(f"{i.crl_number:>8} {i.kind:<5} {i.this_update:%Y-%m-%d %H:%M:%SZ} -> "
                   f"{i.next_update:%Y-%m-%d %H:%M:%SZ} {i.entries:>8} entries  {i.sha256[:16]}")


@crl.command("get")
@click.option("--ca", "ca_name", default="issuing", show_default=True)
@click.option("--at", "at", help="The CRL current at this past time (ISO 8601).")
@click.option("--kind", type=click.Choice(["full", "delta"]), default="full", show_default=True)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False))
@with_services
def crl_get(svc, ca_name, at, kind, out):
    """Write a published CRL (the current one, or the one current at --at) as DER."""
    from crl.publish import CrlPublisher
    pub = CrlPublisher(svc.db, svc.keys, svc.clock, svc.settings.base_url)
    when = _time(at, "--at")
    info = pub.at(ca_name, when, kind) if when else pub.current(ca_name, kind)
    if info is None:
        raise CLIError("no such CRL was published")
    Path(out).write_bytes(info.der)
    click.echo(f"CRL number {info.crl_number} of {info.this_update:%Y-%m-%d %H:%M:%SZ} -> {out}")


# --- OCSP ------------------------------------------------------------------------------------
@main.group()
def ocsp():
    """OCSP responder: responder certificates and pre-signed answers."""


@ocsp.command("responder")
@click.option("--ca", "ca_name", help="One CA (default: every active CA).")
@click.option("--force", is_flag=True, help="Issue a new responder certificate now.")
@with_services
def ocsp_responder(svc, ca_name, force):
    """Issue (or renew when near expiry) the delegated responder certificate of each CA."""
    from crl.responder import ResponderManager
    mgr = ResponderManager(svc.db, svc.keys, svc.clock, svc.issuance, actor="operator:cli")
    for name in _cas(svc, ca_name):
        row, created = mgr.ensure(name, force=force)
        click.echo(f"{name}: responder {'issued' if created else 'kept'}, valid until "
                   f"{row.not_after:%Y-%m-%d %H:%M:%SZ}")


@ocsp.command("refresh")
@click.option("--ca", "ca_name", help="One CA (default: every CA).")
@with_services
def ocsp_refresh(svc, ca_name):
    """Pre-sign OCSP answers that are missing or near their nextUpdate."""
    from crl.ocsp import OcspService
    n = OcspService(svc.db, svc.keys, svc.clock).presign(ca_name)
    click.echo(f"{n} OCSP answer(s) signed")


# --- scheduler -------------------------------------------------------------------------------
@main.command()
@click.option("--once", is_flag=True, help="Run one round of every job (if leader) and exit.")
@click.option("--interval", type=click.FloatRange(1, 86400), default=None,
              help="Seconds between job runs (default GOVCA_SCHEDULER_INTERVAL or 60).")
@with_services
def scheduler(svc, once, interval):
    """Run the freshness jobs (CRLs, OCSP, responder renewal) as a leader-elected process."""
    from crl.scheduler import Lease, Scheduler, build_jobs, interval_from_env
    sched = Scheduler(build_jobs(svc), Lease(svc.db, svc.clock),
                      interval=interval or interval_from_env())
    if once:
        result = sched.tick()
        if result is None:
            click.echo("another process holds the scheduler lease; nothing done")
            return
        click.echo(f"responders renewed: {', '.join(result['responders']) or 'none'}; "
                   f"CRLs published: {len(result['crls'])}; OCSP answers signed: {result['ocsp']}")
        sched.lease.release()
        return
    click.echo(f"scheduler running every {sched.interval:g} s as {sched.lease.holder} (Ctrl-C stops)")
    try:
        sched.run_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
