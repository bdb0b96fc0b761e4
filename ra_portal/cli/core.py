"""`govca` commands of the CA core: instance, db, demo, ca, cert issue/show, serve."""
from __future__ import annotations

import datetime as dt
import sys

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from ca.keys import KeySpec
from ca.names import SubjectData
from ra_portal.cli.common import CLIError, cli_errors, main, read_limited, with_services


# --- instance and database -----------------------------------------------------------------
@main.group()
def instance():
    """The embedded instance (SQLite + SoftHSM token under ./instance)."""


@instance.command("init")
def instance_init():
    """Create the instance folder, SoftHSM token, PIN files and secret key if missing."""
    from ra_portal.instance import init_instance
    from ra_portal.settings import Settings
    settings = Settings.from_env()
    if settings.hsm is None:
        raise CLIError("no PKCS#11 module: install SoftHSM 2 (apt-get install softhsm2) or set "
                       "GOVCA_PKCS11_MODULE")
    try:
        init_instance(settings.instance, settings.hsm, echo=click.echo)
    except (RuntimeError, OSError) as exc:
        raise CLIError(str(exc)) from None
    settings.secret_key()
    click.echo(f"instance ready: {settings.instance}")


@main.group()
def db():
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@with_services
def db_upgrade(svc, revision):
    """Apply the Alembic migrations."""
    from ca.store import migrate
    migrate.upgrade(svc.db.engine, revision)
    click.echo(f"database at revision {migrate.current(svc.db.engine)}")


@db.command("current")
@with_services
def db_current(svc):
    """Show the current schema revision."""
    from ca.store import migrate
    click.echo(migrate.current(svc.db.engine) or "(empty database)")


# --- demo ------------------------------------------------------------------------------------
@main.group()
def demo():
    """Demo CA hierarchy and data."""


@demo.command("init")
@with_services
def demo_init(svc):
    """Create the demo CAs, RA domains, organisations and staff if absent."""
    from ra_portal.demo import init_demo
    init_demo(svc, echo=click.echo)


# --- CAs -------------------------------------------------------------------------------------
@main.group("ca")
def ca_group():
    """Certificate authorities and key ceremonies."""


def _ca_options(default_name, default_cn, default_key, default_days):
    def deco(fn):
        opts = [
            click.option("--name", default=default_name, show_default=True,
                         help="Short name, used in URLs (/pki/certs/NAME.crt)."),
            click.option("--cn", "common_name", default=default_cn, show_default=True),
            click.option("--organization", default="Ban Cơ yếu Chính phủ", show_default=True),
            click.option("--key", "key", default=default_key, show_default=True,
                         help="rsa2048, rsa3072, rsa4096, p256 or p384."),
            click.option("--signature", type=click.Choice(["pkcs1v15", "pss"]), default="pkcs1v15",
                         show_default=True, help="RSA signature scheme (ECDSA keys ignore it)."),
            click.option("--hash", "hash_name", type=click.Choice(["sha256", "sha384", "sha512"]),
                         default="sha256", show_default=True),
            click.option("--validity-days", type=int, default=default_days, show_default=True),
            click.option("--force", is_flag=True,
                         help="Replace an existing CA of this name (the old one is retired)."),
        ]
        for opt in reversed(opts):
            fn = opt(fn)
        return fn
    return deco


def _params(name, common_name, organization, key, signature, hash_name, validity_days):
    from ca.ceremony import CAParameters
    try:
        spec = KeySpec.parse(key)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return CAParameters(name=name, key_spec=spec, scheme=signature, hash_algorithm=hash_name,
                        validity_days=validity_days,
                        subject=SubjectData(common_name=common_name, organization=organization))


def _report(result):
    ca = result.ca
    verb = "created" if result.created else "exists (unchanged; use --force to replace)"
    click.echo(f"CA {ca.name} {verb}")
    click.echo(f"  subject:   {ca.subject}")
    click.echo(f"  key:       {ca.key_type.upper()} {ca.key_spec} in HSM, label {ca.key_label}, "
               f"id {ca.key_id}")
    click.echo(f"  serial:    {ca.serial}")
    click.echo(f"  not after: {ca.not_after:%Y-%m-%d %H:%M:%SZ}")


@ca_group.command("init-root")
@_ca_options("root", "GovCA Root CA", "rsa3072", 7305)
@with_services
def ca_init_root(svc, name, common_name, organization, key, signature, hash_name, validity_days,
                 force):
    """Key ceremony: generate the root key in the HSM and self-sign the root certificate."""
    params = _params(name, common_name, organization, key, signature, hash_name, validity_days)
    _report(svc.ceremony().init_root(params, force=force))


@ca_group.command("init-issuing")
@_ca_options("issuing", "GovCA Issuing CA", "rsa2048", 3653)
@click.option("--parent", default="root", show_default=True)
@with_services
def ca_init_issuing(svc, name, common_name, organization, key, signature, hash_name,
                    validity_days, force, parent):
    """Key ceremony: generate an issuing CA key in the HSM and certify it with the parent."""
    params = _params(name, common_name, organization, key, signature, hash_name, validity_days)
    _report(svc.ceremony().init_issuing(params, parent, svc.profiles["sub-ca"], force=force))


@ca_group.command("list")
@with_services
def ca_list(svc):
    """List the CAs."""
    from ca.store.models import CertificateAuthority
    with svc.db.transaction() as s:
        for ca in s.execute(select(CertificateAuthority).order_by(CertificateAuthority.id)).scalars():
            click.echo(f"{ca.name:<12} {ca.status:<8} {ca.key_type.upper()}-{ca.key_spec:<10} "
                       f"{ca.not_after:%Y-%m-%d}  {ca.subject}")


@ca_group.command("show")
@click.argument("name")
@click.option("--pem", is_flag=True, help="Print the certificate as PEM.")
@with_services
def ca_show(svc, name, pem):
    """Show one CA (key attributes are read from the HSM)."""
    from ca.store.models import CertificateAuthority
    with svc.db.transaction() as s:
        ca = s.execute(select(CertificateAuthority).where(
            CertificateAuthority.name == name)).scalar_one_or_none()
    if ca is None:
        raise CLIError(f"no CA named {name!r}")
    if pem:
        cert = x509.load_der_x509_certificate(ca.certificate_der)
        click.echo(cert.public_bytes(serialization.Encoding.PEM).decode(), nl=False)
        return
    attrs = svc.keys.attributes(bytes.fromhex(ca.key_id))
    _report(type("R", (), {"ca": ca, "created": True})())
    click.echo(f"  key attributes: {', '.join(f'{k}={v}' for k, v in attrs.items())}")


@ca_group.command("recover")
@click.option("--older-than-minutes", type=int, default=5, show_default=True)
@with_services
def ca_recover(svc, older_than_minutes):
    """Resolve issuance intents left by a crash (their serials were never released)."""
    from ca.issuance.service import recover_intents
    done = recover_intents(svc.db, svc.clock, dt.timedelta(minutes=older_than_minutes))
    for item in done:
        click.echo(f"abandoned {item}")
    click.echo(f"{len(done)} intent(s) resolved")
    # issue 8: requests left 'approved' by a crash or a database outage while carried out.
    from ca.ra.approval import recover_interrupted
    for rid, state in recover_interrupted(svc.db, svc.clock,
                                          dt.timedelta(minutes=older_than_minutes),
                                          actor="system:recovery"):
        click.echo(f"request {rid}: {state}")


# --- certificates ----------------------------------------------------------------------------
@main.group()
def cert():
    """Certificates."""


@cert.command("issue")
@click.option("--ca", "ca_name", default="issuing", show_default=True)
@click.option("--profile", default="personal", show_default=True)
@click.option("--csr", "csr_file", required=True, type=click.Path(dir_okay=False),
              help="CSR file, PEM or DER ('-' for standard input).")
@click.option("--subscriber", help="Subscriber id or staff username.")
@click.option("--cn", "common_name", help="Subject CN for profiles without a subscriber.")
@click.option("--dns", multiple=True, help="DNS name (tls-server), repeatable.")
@click.option("--validity-days", type=int)
@click.option("--actor", default="operator:cli", show_default=True, hidden=True)
@with_services
def cert_issue(svc, ca_name, profile, csr_file, subscriber, common_name, dns, validity_days, actor):
    """Issue a certificate from a CSR; prints the certificate as PEM."""
    from ca.issuance.service import IssueRequest
    from ca.registry import find_subscriber
    data = read_limited(csr_file, what="CSR")
    sub_id = None
    if subscriber:
        with svc.db.transaction() as s:
            sub_id = find_subscriber(s, subscriber).id
    subject = SubjectData(common_name=common_name, organization="Ban Cơ yếu Chính phủ") \
        if common_name else None
    row = svc.issuance().issue(IssueRequest(
        ca=ca_name, profile=profile, csr=data, actor=actor, subscriber_id=sub_id, subject=subject,
        dns_names=tuple(dns), validity_days=validity_days))
    cert_obj = x509.load_der_x509_certificate(row.der)
    click.echo(cert_obj.public_bytes(serialization.Encoding.PEM).decode(), nl=False)
    click.echo(f"issued serial {row.serial} by {ca_name}", err=True)


@cert.command("show")
@click.argument("serial")
@click.option("--ca", "ca_name", help="Issuing CA (when a serial exists under several).")
@click.option("--pem", is_flag=True, help="Print only the PEM certificate.")
@with_services
def cert_show(svc, serial, ca_name, pem):
    """Show a certificate by serial (lowercase hex)."""
    from ca import serial as serials
    from ca.store.models import Certificate, CertificateAuthority
    try:
        hexserial = serials.to_hex(serials.parse(serial))
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    with svc.db.transaction() as s:
        q = select(Certificate).join(CertificateAuthority).where(Certificate.serial == hexserial)
        if ca_name:
            q = q.where(CertificateAuthority.name == ca_name)
        rows = s.execute(q).scalars().all()
        if not rows:
            raise CLIError(f"no certificate with serial {hexserial}")
        if len(rows) > 1:
            raise CLIError("several CAs have this serial; give --ca")
        row = rows[0]
        ca_label = row.ca.name
    if pem:
        if row.der is None:
            raise CLIError(f"serial {hexserial} was {row.state}; there is no certificate")
        click.echo(x509.load_der_x509_certificate(row.der).public_bytes(
            serialization.Encoding.PEM).decode(), nl=False)
        return
    status = row.state
    if row.state == "issued":
        status = "revoked" if row.revoked_at else (
            "expired" if row.not_after <= svc.clock.now() else "valid")
    click.echo(f"serial:     {row.serial}")
    click.echo(f"issuer:     {ca_label}")
    click.echo(f"status:     {status}")
    click.echo(f"profile:    {row.profile}")
    click.echo(f"subject:    {row.subject}")
    click.echo(f"not before: {row.not_before:%Y-%m-%d %H:%M:%SZ}")
    click.echo(f"not after:  {row.not_after:%Y-%m-%d %H:%M:%SZ}")
    if row.subscriber_id:
        click.echo(f"subscriber: {row.subscriber_id}")
    if row.fingerprint_sha256:
        click.echo(f"sha256:     {row.fingerprint_sha256}")
    if row.revoked_at:
        click.echo(f"revoked:    {row.revoked_at:%Y-%m-%d %H:%M:%SZ} ({row.revocation_reason})")
    if row.failure_reason:
        click.echo(f"note:       {row.failure_reason}")


# --- serving ---------------------------------------------------------------------------------
def serve_workers(cpus: int | None = None) -> int:
    """Default worker count of `govca serve`: one single-threaded (`sync`) process per CPU, at
    least 2. Each request is CPU work in its own process (SoftHSM signs in the worker), so a
    second worker per CPU only adds processes that invalidate each other's SQLite page cache
    and share the CPU caches: on 2 CPUs, with 4 clients of the batch API, 2 workers spent
    7-12 % less CPU per certificate than 4 and issued 3-12 % more certificates/s, in every one
    of eight alternating runs (docs/performance-issuance.md §2g). `--relying-parties` starts as
    many OCSP workers (16 threads each), as docs/performance.md measured them."""
    import os
    cpus = cpus or os.cpu_count() or 1
    return max(2, cpus)


@main.command()
@click.option("--listen", default=None, help="host:port (default GOVCA_LISTEN or 127.0.0.1:8080)")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="gunicorn worker processes (default: 1 per CPU, at least 2; each serves "
                   "one request at a time, or 16 threads with --relying-parties)")
@click.option("--relying-parties", is_flag=True,
              help="tune for OCSP/CRL traffic: the OCSP worker (crl/gunicorn_worker.py), 16 "
                   "threads, keep-alive, no per-request access log (docs/deployment.md)")
def serve(listen, workers, relying_parties):
    """Serve the web application with gunicorn."""
    import os
    from ra_portal.settings import Settings
    with cli_errors():  # a bad setting is one line, not a traceback
        settings = Settings.from_env()
    listen = listen or settings.listen
    click.echo(f"GovCA on http://{listen}/  (relying parties: /pki/certs/<ca>.crt, "
               f"/pki/crl/<ca>.crl, /ocsp)")
    creds = settings.instance / "demo-credentials.txt"
    if creds.exists():
        click.echo(f"demo logins: {creds}")
    os.environ.setdefault("GOVCA_SCHEDULER", "inprocess")  # CRL/OCSP freshness (crl/scheduler.py)
    if workers is None:  # see serve_workers()
        workers = serve_workers()
    args = [sys.executable, "-m", "gunicorn", "--bind", listen, "--workers", str(workers)]
    if relying_parties:
        args += ["--worker-class", "crl.gunicorn_worker.OcspWorker", "--threads", "16",
                 "--keep-alive", "30"]
    else:
        args += ["--access-logfile", "-"]
    os.execvp(sys.executable, [*args, "wsgi:app"])

