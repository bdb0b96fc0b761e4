"""`govca token`: key devices on the RA workstation (enrol, unblock) and in the registry."""
from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

import click

from ca.errors import CAError, HsmUnavailable
from ca.tokens.pin_policy import check_pin
import functools

from ra_portal.cli.common import CLIError, EXIT_HSM, main, read_limited


@main.group("token")
def token_group():
    """Key devices: staff tokens, remote keys, PIN unblock."""


def _default_module() -> str | None:
    from hsm.config import find_softhsm
    return os.environ.get("GOVCA_TOKEN_MODULE") or find_softhsm()


def _read_pin(path: str | None, prompt: str) -> str:
    """A PIN from a file ('-' = stdin) or a hidden prompt; never echoed, never logged."""
    if path:
        text = read_limited(path, limit=256, what="PIN file").decode("utf-8", "replace")
        return text.strip()
    return click.prompt(prompt, hide_input=True, confirmation_prompt=True, err=True)


def _services():
    from ra_portal.settings import Settings
    from ra_portal.wiring import build_services
    return build_services(Settings.from_env())


def _gateway_for(svc, actor: str):
    from ca.tokens.gateway import TokenGateway
    from hsm.escrow import HsmSealer
    sealer = HsmSealer(svc.keys.pool)
    sealer.ensure_key()
    return TokenGateway(svc.db, svc.clock, svc.issuance(), sealer, actor=actor)


def _open_gateway(transport: str, actor: str):
    """The GovCA end. `pipe`: a child process with the CA's own HSM configuration (SoftHSM reads
    one SOFTHSM2_CONF per process; the staff token's is this process's). `inprocess`: when the
    staff token's module is not the CA's. Later: an HTTPS client of /api/v1 with these methods."""
    if transport == "inprocess":
        svc = _services()
        return _gateway_for(svc, actor), svc.close
    from ca.tokens.transport import PipeGateway
    from ra_portal.settings import Settings
    settings = Settings.from_env()
    env = dict(os.environ)
    conf = settings.hsm.softhsm_conf if settings.hsm else None
    if settings.hsm and settings.hsm.is_softhsm and conf and Path(conf).exists():
        env["SOFTHSM2_CONF"] = str(conf)
    argv = [sys.executable, "-c", "from ra_portal.cli import main; main()", "token",
            "gateway-serve", "--actor", actor]
    gw = PipeGateway(argv, env=env)
    return gw, gw.close


def with_services(fn):
    """Like common.with_services, without building the Flask app (these commands need only the
    core services; a workstation command starts faster)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            svc = _services()
        except CAError as exc:
            raise CLIError(exc.message) from None
        try:
            return _run(lambda: fn(svc, *args, **kwargs))
        finally:
            svc.close()
    return wrapper


def _run(fn):
    try:
        return fn()
    except HsmUnavailable as exc:
        err = CLIError(f"HSM unavailable: {exc.message}")
        err.exit_code = EXIT_HSM
        raise err from None
    except CAError as exc:
        raise CLIError(exc.message) from None


_workstation = [
    click.option("--module", default=_default_module, show_default="GOVCA_TOKEN_MODULE or SoftHSM",
                 help="PKCS#11 module of the staff token (on this workstation)."),
    click.option("--token-serial", help="Pick the token by serial (CK_TOKEN_INFO.serialNumber)."),
    click.option("--transport", type=click.Choice(["pipe", "inprocess"]), default="pipe",
                 show_default=True, help="How to reach GovCA."),
    click.option("--actor", default=lambda: f"ra-workstation:{getpass.getuser()}",
                 help="Who operates the workstation (recorded in the audit trail)."),
]


def _ws(fn):
    for opt in reversed(_workstation):
        fn = opt(fn)
    return fn


@token_group.command("enrol")
@click.option("--token-label", required=True, help="Label to give the token (max 32 bytes).")
@click.option("--subscriber", required=True, help="Holder: subscriber id or staff username.")
@click.option("--pin-file", help="File holding the holder's chosen PIN ('-' = stdin); "
                                 "otherwise a hidden prompt.")
@click.option("--key", "key", type=click.Choice(["rsa2048", "rsa3072", "p256"]),
              default="rsa2048", show_default=True)
@_ws
def token_enrol(token_label, subscriber, pin_file, key, module, token_serial, transport, actor):
    """Initialise a token (random SO PIN, escrowed in GovCA), set the holder's PIN, generate the
    key on the token, have GovCA certify it, write certificate and chain to the token."""
    from ca.keys import KeySpec
    from ca.tokens.workstation import enrol
    from hsm.token_ops import StaffToken, random_so_pin
    if not module:
        raise CLIError("no PKCS#11 module for the token: give --module")
    pin = _read_pin(pin_file, "Holder's new PIN")
    _run(lambda: check_pin(pin, field="pin"))  # before anything is touched or contacted

    def go():
        device = StaffToken(module)
        gateway, close = _open_gateway(transport, actor)
        try:
            return enrol(device, gateway, subscriber=subscriber, label=token_label,
                         user_pin=pin, key_spec=KeySpec.parse(key), random_so_pin=random_so_pin,
                         token_serial=token_serial, echo=lambda m: click.echo(m, err=True))
        finally:
            close()
    done = _run(go)
    click.echo(f"enrolled device {done.device_id}: token {done.serial}, certificate "
               f"{done.certificate_serial}")


@token_group.command("unblock")
@click.option("--token-label", help="Label of the token to unblock.")
@click.option("--code", required=True, help="The one-time unblock code from the RA office.")
@click.option("--new-pin-file", help="File holding the holder's new PIN ('-' = stdin); "
                                     "otherwise a hidden prompt. It is never sent to GovCA.")
@_ws
def token_unblock(token_label, code, new_pin_file, module, token_serial, transport, actor):
    """Unblock a token with a one-time code: GovCA checks the code against THIS token, releases
    the escrowed SO PIN once, and the holder's new PIN is set on the token (C_InitPIN)."""
    from ca.tokens.workstation import unblock
    from hsm.token_ops import StaffToken, random_so_pin
    if not module:
        raise CLIError("no PKCS#11 module for the token: give --module")
    if not token_label and not token_serial:
        raise CLIError("name the token with --token-label or --token-serial")
    pin = _read_pin(new_pin_file, "New PIN")
    _run(lambda: check_pin(pin, field="new_pin"))

    def go():
        device = StaffToken(module)
        gateway, close = _open_gateway(transport, actor)
        try:
            return unblock(device, gateway, code=code, new_pin=pin, label=token_label,
                           token_serial=token_serial, random_so_pin=random_so_pin,
                           echo=lambda m: click.echo(m, err=True))
        finally:
            close()
    done = _run(go)
    click.echo(f"token {done.serial} unblocked (device {done.device_id})")


@token_group.command("status")
@click.option("--module", default=_default_module)
def token_status(module):
    """The tokens connected to this workstation and their PIN flags."""
    from hsm.token_ops import StaffToken, pin_status
    for t in _run(lambda: StaffToken(module).tokens()):
        click.echo(f"slot {t.slot_id:<12} {t.label or '(uninitialised)':<32} serial "
                   f"{t.serial or '-':<18} PIN {pin_status(t.flags)}")


@token_group.command("gateway-serve", hidden=True)
@click.option("--actor", required=True)
def token_gateway_serve(actor):
    """GovCA's end of the pipe transport: JSON requests on stdin, answers on stdout."""
    from ca.tokens.transport import serve
    svc = _services()
    try:
        gateway = _run(lambda: _gateway_for(svc, actor))
        serve(gateway, sys.stdin, sys.stdout)
    finally:
        svc.close()


@token_group.command("escrow-key")
@with_services
def token_escrow_key(svc):
    """Create the SO-PIN escrow wrapping key in the CA token (once; AES-256, non-extractable)."""
    from hsm.escrow import HsmSealer
    sealer = HsmSealer(svc.keys.pool)
    created = sealer.ensure_key()
    attrs = sealer.key_attributes()
    click.echo(f"escrow key {sealer.key_label} {'created' if created else 'exists'}: "
               + ", ".join(f"{k}={v}" for k, v in attrs.items()))


@token_group.command("list")
@click.option("--subscriber", help="Only this holder's devices (id or staff username).")
@with_services
def token_list(svc, subscriber):
    """Registered key devices."""
    from ca.registry import find_subscriber
    from ca.tokens.registry import devices_of
    with svc.db.transaction() as s:
        holder = find_subscriber(s, subscriber).id if subscriber else None
        for d in devices_of(s, holder):
            click.echo(f"{d.id:<6} {d.device_type:<6} {d.state:<12} {d.serial or '-':<18} "
                       f"{d.label:<20} holder {d.holder_id}")


@token_group.command("show")
@click.argument("device")
@with_services
def token_show(svc, device):
    """One device (id or serial) with its certificates."""
    from ca.tokens.registry import device_certificates, find_device
    with svc.db.transaction() as s:
        d = find_device(s, device)
        click.echo(f"device:     {d.id} ({d.device_type})")
        click.echo(f"state:      {d.state} since {d.state_changed_at:%Y-%m-%d %H:%M:%SZ}"
                   + (f" ({d.state_reason})" if d.state_reason else ""))
        click.echo(f"serial:     {d.serial or '-'}  label {d.label}  model {d.model or '-'}")
        click.echo(f"holder:     {d.holder_id} {d.holder.full_name}")
        for c in device_certificates(s, d.id):
            status = "revoked" if c.revoked_at else c.state
            click.echo(f"certificate {c.serial} {status} until {c.not_after:%Y-%m-%d}")


@token_group.command("end")
@click.argument("device")
@click.option("--state", type=click.Choice(["lost", "destroyed", "retired"]), required=True)
@click.option("--reason", help="Free text recorded with the transition.")
@click.option("--revoke/--no-revoke", default=True, show_default=True,
              help="Revoke the device's certificates now (else the RA workflow raises requests).")
@click.option("--actor", default="operator:cli", show_default=True, hidden=True)
@with_services
def token_end(svc, device, state, reason, revoke, actor):
    """Mark a device lost, destroyed or retired; revoke its certificates (keyCompromise for
    lost/destroyed)."""
    from ca.tokens.registry import end_device, find_device, revoke_device_certificates
    with svc.db.transaction() as s:
        dev_id = find_device(s, device).id
        pending = end_device(s, dev_id, state, actor=actor, at=svc.clock.now(), reason=reason)
    click.echo(f"device {dev_id} is {state}; {len(pending)} certificate(s) due for revocation")
    if revoke:
        for serial in revoke_device_certificates(svc.db, svc.clock, dev_id, actor=actor):
            click.echo(f"revoked {serial}")
