"""`govca audit` commands: audit key ceremony, checkpoints, verification and export."""
from __future__ import annotations

import getpass
import sys

import click

from ca.keys import KeySpec
from ra_portal.cli.common import CLIError, main, with_services

EXIT_BROKEN = 4  # the audit trail has problems (errors of the command itself exit 1 or 3)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


@main.group()
def audit():
    """Tamper-evident audit trail: key, checkpoints, verify, export."""


@audit.command("init-key")
@click.option("--ca", "ca_name", default="issuing", show_default=True,
              help="CA that certifies the audit key")
@click.option("--key", "key_text", default="p256", show_default=True,
              help="rsa2048 | rsa3072 | rsa4096 | p256 | p384")
@click.option("--force", is_flag=True, help="make a new key and retire the current one")
@with_services
def init_key(svc, ca_name, key_text, force):
    """Audit key ceremony: key generated in the HSM, certificate issued through the issuance
    cycle. Idempotent: an existing active key is reported and kept."""
    from ca.audit_checkpoint import init_key as ceremony
    try:
        spec = KeySpec.parse(key_text)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    result = ceremony(svc.db, svc.keys, svc.issuance(), svc.clock, ca=ca_name, key_spec=spec,
                      actor=_actor(), force=force)
    k = result.key
    state = "created" if result.created else "exists"
    click.echo(f"audit key {state}: {k.key_type.upper()} {k.key_spec}, label {k.key_label}, "
               f"certificate {k.ca_name}:{k.serial}, sha256 {k.fingerprint_sha256}, "
               f"valid until {k.not_after:%Y-%m-%d}")


@audit.command("checkpoint")
@click.option("--if-changed", is_flag=True, help="do nothing when no event was appended since "
                                                 "the last checkpoint")
@with_services
def checkpoint_cmd(svc, if_changed):
    """Sign the chain head with the audit key in the HSM (after checking the new events)."""
    from ca.audit_checkpoint import take_checkpoint
    row = take_checkpoint(svc.db, svc.keys, svc.clock, only_if_changed=if_changed)
    if row is None:
        click.echo("no new events since the last checkpoint; nothing signed")
        return
    click.echo(f"checkpoint {row.number}: seq {row.seq}, {row.event_count} events, hash "
               f"{row.hash}, signed {row.at:%Y-%m-%d %H:%M:%S}Z ({row.algorithm})")


@audit.command("verify")
@click.option("--no-hsm", is_flag=True, help="do not compare audit certificates with the keys "
                                             "held in the HSM")
@with_services
def verify_cmd(svc, no_hsm):
    """Check the whole chain, its head and every checkpoint. One line per problem naming the
    event seq; exit 0 when intact, 4 when a problem was found."""
    from ca import audit as audit_log
    from ca.audit_guard import append_only_installed
    from ca.audit_verify import verify_trail
    from ca.errors import CAError
    keys = None
    if not no_hsm:
        try:
            keys = svc.keys
        except CAError as exc:
            click.echo(f"note: audit keys not compared with the HSM: {exc.message}", err=True)
    with svc.db.transaction() as s:
        report = verify_trail(s, keys=keys)
        guarded = append_only_installed(s.connection())
    for p in report.problems:
        click.echo(p.line())
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    if not guarded:
        click.echo("note: the append-only triggers are not installed in this database", err=True)
    try:
        with svc.db.transaction() as s:
            audit_log.record(s, "audit.verify", actor=_actor(), at=svc.clock.now(), details={
                "ok": report.ok, "problems": len(report.problems), "events": report.events,
                "checkpoints": report.checkpoints})
    except CAError as exc:
        click.echo(f"note: the verification itself could not be recorded: {exc.message}",
                   err=True)
    if report.problems:
        first = next((p.seq for p in report.problems if p.seq is not None), None)
        click.echo(f"audit trail BROKEN: {len(report.problems)} problem(s) in {report.events} "
                   f"events and {report.checkpoints} checkpoints; the first at seq {first}",
                   err=True)
        sys.exit(EXIT_BROKEN)
    last = report.last_checkpoint
    click.echo(f"audit trail intact: {report.events} events, {report.checkpoints} checkpoints"
               + (f", last checkpoint {last.number} at seq {last.seq}" if last else ""))


@audit.command("export")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="new (or empty) directory to write into")
@with_services
def export_cmd(svc, out):
    """Write events (JSON lines), checkpoints, the head and the audit certificate chain; verify
    it anywhere with tools/verify_audit_export.py DIR."""
    from ca.audit_export import export_trail
    result = export_trail(svc.db, out, clock=svc.clock, actor=_actor())
    if result.unrecorded:
        click.echo(f"warning: {result.unrecorded}", err=True)
    click.echo(f"exported {result.events} events and {result.checkpoints} checkpoints to "
               f"{result.directory}")
