"""`govca token`: key devices on the RA workstation (enrol, unblock) and in the registry."""
from __future__ import annotations

import getpass
import os

import click

from ca.tokens.pin_policy import check_pin
from ra_portal.cli.common import (CLIError, cli_errors, core_services, main, read_limited,
                                  with_core_services)


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


def _api_token(path: str | None) -> str:
    if path:
        token = read_limited(path, limit=1024, what="API token file").decode("utf-8",
                                                                              "replace").strip()
    else:
        token = os.environ.get("GOVCA_API_TOKEN", "").strip()
    if not token:
        raise CLIError("with --url, give --api-token-file FILE or GOVCA_API_TOKEN (an API token "
                       "of the RA officer, or of the holder for an unblock: "
                       "`govca user token USERNAME`)")
    return token


def _open_gateway(url: str | None, token_file: str | None, actor: str):
    """GovCA's end. With a URL (the RA workstation): the REST API, acting as the API token's
    user. Without: GovCA's services in this process (the CA's own console, with database and
    CA token; the staff token's module must then see the CA token too, e.g. the same SoftHSM
    configuration)."""
    if url:
        from ca.tokens.transport import HttpGateway
        gw = HttpGateway(url, _api_token(token_file),
                         cafile=os.environ.get("GOVCA_API_CA_FILE") or None)
        return gw, gw.close
    from ca.tokens.gateway import TokenGateway
    svc = core_services()
    try:
        sealer = svc.escrow_sealer()
    except BaseException:
        svc.close()
        raise
    return TokenGateway(svc.db, svc.clock, svc.issuance(), sealer, actor=actor), svc.close


_workstation = [
    click.option("--module", default=_default_module, show_default="GOVCA_TOKEN_MODULE or SoftHSM",
                 help="PKCS#11 module of the staff token (on this workstation)."),
    click.option("--token-serial", help="Pick the token by serial (CK_TOKEN_INFO.serialNumber)."),
    click.option("--url", envvar="GOVCA_API_URL",
                 help="GovCA's base URL (env GOVCA_API_URL): talk to it over the REST API. "
                      "Without it GovCA's services run in this process (CA console)."),
    click.option("--api-token-file", help="File holding the API token (else env "
                                          "GOVCA_API_TOKEN); with --url."),
    click.option("--actor", default=lambda: f"ra-workstation:{getpass.getuser()}",
                 help="Who operates the workstation, recorded in the audit trail (without "
                      "--url; over the API the token's user is recorded)."),
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
def token_enrol(token_label, subscriber, pin_file, key, module, token_serial, url,
                api_token_file, actor):
    """Initialise a token (random SO PIN, escrowed in GovCA), set the holder's PIN, generate the
    key on the token, have GovCA certify it, write certificate and chain to the token."""
    from ca.keys import KeySpec
    from ca.tokens.workstation import enrol
    from hsm.token_ops import StaffToken, random_so_pin
    if not module:
        raise CLIError("no PKCS#11 module for the token: give --module")
    pin = _read_pin(pin_file, "Holder's new PIN")
    with cli_errors():
        check_pin(pin, field="pin")  # before anything is touched or contacted

    def go():
        device = StaffToken(module)
        gateway, close = _open_gateway(url, api_token_file, actor)
        try:
            return enrol(device, gateway, subscriber=subscriber, label=token_label,
                         user_pin=pin, key_spec=KeySpec.parse(key), random_so_pin=random_so_pin,
                         token_serial=token_serial, echo=lambda m: click.echo(m, err=True))
        finally:
            close()
    with cli_errors():
        done = go()
    click.echo(f"enrolled device {done.device_id}: token {done.serial}, certificate "
               f"{done.certificate_serial}")


@token_group.command("unblock")
@click.option("--token-label", help="Label of the token to unblock.")
@click.option("--code", required=True, help="The one-time unblock code from the RA office.")
@click.option("--new-pin-file", help="File holding the holder's new PIN ('-' = stdin); "
                                     "otherwise a hidden prompt. It is never sent to GovCA.")
@_ws
def token_unblock(token_label, code, new_pin_file, module, token_serial, url, api_token_file,
                  actor):
    """Unblock a token with a one-time code: GovCA checks the code against THIS token, releases
    the escrowed SO PIN once, and the holder's new PIN is set on the token (C_InitPIN)."""
    from ca.tokens.workstation import unblock
    from hsm.token_ops import StaffToken, random_so_pin
    if not module:
        raise CLIError("no PKCS#11 module for the token: give --module")
    if not token_label and not token_serial:
        raise CLIError("name the token with --token-label or --token-serial")
    pin = _read_pin(new_pin_file, "New PIN")
    with cli_errors():
        check_pin(pin, field="new_pin")

    def go():
        device = StaffToken(module)
        gateway, close = _open_gateway(url, api_token_file, actor)
        try:
            return unblock(device, gateway, code=code, new_pin=pin, label=token_label,
                           token_serial=token_serial, random_so_pin=random_so_pin,
                           echo=lambda m: click.echo(m, err=True))
        finally:
            close()
    with cli_errors():
        done = go()
    click.echo(f"token {done.serial} unblocked (device {done.device_id})")


@token_group.command("status")
@click.option("--module", default=_default_module)
def token_status(module):
    """The tokens connected to this workstation and their PIN flags."""
    from hsm.token_ops import StaffToken, pin_status
    with cli_errors():
        tokens = StaffToken(module).tokens()
    for t in tokens:
        click.echo(f"slot {t.slot_id:<12} {t.label or '(uninitialised)':<32} serial "
                   f"{t.serial or '-':<18} PIN {pin_status(t.flags)}")


@token_group.command("escrow-key")
@with_core_services
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
@with_core_services
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
@with_core_services
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
@with_core_services
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
