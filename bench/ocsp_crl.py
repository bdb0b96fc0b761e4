"""Benchmark of the relying-party side: OCSP over HTTP under gunicorn (pre-signed, and with a
nonce = signed in the HSM per request), pre-signing rate, and CRLs of 10k/100k/1M entries (time,
peak memory), each beside the raw PKCS#11 signing rate of the same key measured in the same run.

    .venv/bin/python bench/ocsp_crl.py --quick            # ~3 minutes
    .venv/bin/python bench/ocsp_crl.py                    # longer runs, 3 repetitions
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
USER_PIN = "11223344"


# --- instance: token + database ------------------------------------------------------------
def make_token(tmp: Path) -> Path:
    (tmp / "tokens").mkdir(exist_ok=True)
    conf = tmp / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin",
                    USER_PIN, "--so-pin", "55667788"], check=True, capture_output=True)
    (tmp / "pin").write_text(USER_PIN)
    return conf


def hsm_config(tmp: Path):
    from hsm.config import HsmConfig, find_softhsm
    return HsmConfig(module=find_softhsm(), token_label="bench", pin_file=tmp / "pin",
                     softhsm_conf=tmp / "softhsm2.conf", pool_size=4)


def build_world(tmp: Path, n_certs: int, responder_key: str, base_url: str):
    """CAs (RSA-2048 issuing like the demo), n_certs issued serials (10 % revoked) inserted in
    bulk, and a delegated responder with the given key type."""
    from sqlalchemy import insert
    from ca.ceremony import CAParameters, Ceremony
    from ca.clock import SystemClock
    from ca.keys import KeySpec
    from ca.names import SubjectData
    from ca.profiles import builtin_profiles
    from ca.store import schema  # noqa: F401  (every table in the metadata)
    from ca.store.base import Base
    from ca.store.database import Database, make_engine
    from ca.store.models import Certificate
    from crl.responder import ResponderManager
    from hsm.store import HsmKeyStore
    from ra_portal.settings import Settings
    from ra_portal.wiring import Services
    url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    db, clock, keys = Database(engine), SystemClock(), HsmKeyStore(hsm_config(tmp))
    profiles = builtin_profiles()
    org = "Ban Cơ yếu Chính phủ"
    cer = Ceremony(db, keys, clock, base_url, actor="bench")
    cer.init_root(CAParameters(name="root", key_spec=KeySpec("rsa", "3072"), validity_days=3650,
                               subject=SubjectData(common_name="Bench Root", organization=org)))
    issuing = cer.init_issuing(CAParameters(
        name="issuing", key_spec=KeySpec("rsa", "2048"), validity_days=1825,
        subject=SubjectData(common_name="Bench Issuing", organization=org)),
        parent="root", profile=profiles["sub-ca"]).ca
    now = clock.now().replace(microsecond=0)
    rng = random.Random(7)
    serials = []
    rows = []
    for i in range(n_certs):
        serial = format(rng.getrandbits(159) | (1 << 158), "x")
        serials.append(serial)
        revoked = i % 10 == 0
        rows.append({"ca_id": issuing.id, "serial": serial, "state": "issued",
                     "profile": "personal", "subject": f"CN=bench {i}", "not_before": now,
                     "not_after": now + dt.timedelta(days=365), "spki_sha256": f"{i:064x}",
                     "tbs_sha256": "0" * 64, "reserved_at": now, "issued_at": now,
                     "revoked_at": now if revoked else None,
                     "revocation_reason": "keyCompromise" if revoked else None})
    with db.transaction() as s:
        for k in range(0, len(rows), 5000):
            s.execute(insert(Certificate.__table__), rows[k:k + 5000])
    settings = Settings(instance=tmp, database_url=url, base_url=base_url,
                        secret_key_file=tmp / "secret", listen="127.0.0.1:0",
                        profiles_file=tmp / "profiles.json", hsm=hsm_config(tmp))
    svc = Services(settings=settings, db=db, clock=clock, profiles=profiles, _keys=keys)
    spec = KeySpec("ec", "secp256r1") if responder_key == "p256" else KeySpec("rsa", "2048")
    ResponderManager(db, keys, clock, svc.issuance, key_spec=spec).ensure("issuing")
    return svc, issuing, serials


# --- raw signing ---------------------------------------------------------------------------
def raw_rate(key, seconds: float, threads: int) -> float:
    """Signatures/s of an HSM key through PKCS#11 (small message, the key's own scheme)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    msg = b"x" * 64
    if isinstance(key, ec.EllipticCurvePrivateKey):
        def one():
            key.sign(msg, ec.ECDSA(hashes.SHA256()))
    else:
        def one():
            key.sign(msg, padding.PKCS1v15(), hashes.SHA256())
    counts = [0] * threads
    end = time.perf_counter() + seconds

    def loop(i):
        n = 0
        while time.perf_counter() < end:
            one()
            n += 1
        counts[i] = n
    ts = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


# --- CRL child process (so that peak RSS is the CRL's own) -----------------------------------
def crl_child(args) -> None:
    from cryptography import x509  # noqa: F401
    from ca.clock import SystemClock
    from crl.crl_builder import CrlEntry, build_crl
    from cryptography.hazmat.primitives import hashes, serialization
    from hsm.store import HsmKeyStore
    tmp = Path(args.instance)
    os.environ["SOFTHSM2_CONF"] = str(tmp / "softhsm2.conf")
    issuer = x509.load_der_x509_certificate((tmp / "issuing.der").read_bytes())
    key = HsmKeyStore(hsm_config(tmp)).load(bytes.fromhex(args.key_id))
    now = SystemClock().now().replace(microsecond=0)
    rng = random.Random(args.crl_child)
    reasons = ["keyCompromise", "superseded", "affiliationChanged", "cessationOfOperation"]
    t0 = time.perf_counter()
    entries = [CrlEntry(rng.getrandbits(159) | (1 << 158), now - dt.timedelta(seconds=i % 86400),
                        reasons[i % 4]) for i in range(args.crl_child)]
    t1 = time.perf_counter()
    crl = build_crl(issuer=issuer, key=key, sign_options={"algorithm": hashes.SHA256()},
                    crl_number=1, this_update=now, next_update=now + dt.timedelta(days=7),
                    entries=entries, freshest_url="http://127.0.0.1/pki/crl/issuing-delta.crl")
    der = crl.public_bytes(serialization.Encoding.DER)
    t2 = time.perf_counter()
    print(json.dumps({"entries_s": t1 - t0, "build_sign_s": t2 - t1, "total_s": t2 - t0,
                      "bytes": len(der),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def crl_bench(tmp: Path, issuing, size: int) -> dict:
    (tmp / "issuing.der").write_bytes(issuing.certificate_der)
    out = subprocess.run([sys.executable, __file__, "--crl-child", str(size), "--instance",
                          str(tmp), "--key-id", issuing.key_id], capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- HTTP ----------------------------------------------------------------------------------
def start_server(tmp: Path, port: int, workers: int, worker_class: str):
    env = dict(os.environ, GOVCA_INSTANCE=str(tmp),
               GOVCA_DATABASE_URL=f"sqlite:///{tmp / 'bench.sqlite3'}",
               GOVCA_PKCS11_TOKEN="bench", GOVCA_PKCS11_PIN_FILE=str(tmp / "pin"),
               GOVCA_BASE_URL=f"http://127.0.0.1:{port}", GOVCA_PROFILES_FILE=str(tmp / "p.json"))
    env.pop("GOVCA_SCHEDULER", None)
    cmd = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers",
           str(workers), "--chdir", str(ROOT), "--log-level", "warning"]
    if worker_class == "gthread":
        cmd += ["--worker-class", "gthread", "--threads", "4", "--keep-alive", "30"]
    proc = subprocess.Popen(cmd + ["wsgi:app"], env=env, cwd=ROOT,
                            stdout=open(tmp / "server.log", "ab"), stderr=subprocess.STDOUT)
    import urllib.request
    for _ in range(150):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError((tmp / "server.log").read_text())


def requests_for(issuing_der: bytes, serials: list[str], nonce: bool):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp
    issuer = x509.load_der_x509_certificate(issuing_der)
    marker = b"\xa5" * 32
    out = []
    for serial in serials:
        from crl.ocsp import _issuer_hashes
        nh, kh = _issuer_hashes(issuer)["sha1"]
        b = ocsp.OCSPRequestBuilder().add_certificate_by_hash(nh, kh, int(serial, 16),
                                                             hashes.SHA1())
        if nonce:
            b = b.add_extension(x509.OCSPNonce(marker), critical=False)
        out.append(b.build().public_bytes(serialization.Encoding.DER))
    nonce_at = out[0].find(marker) if nonce else None
    return out, nonce_at


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs, one repetition")
    ap.add_argument("--certs", type=int, default=None, help="issued serials in the database")
    ap.add_argument("--crl-sizes", default="10000,100000,1000000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--worker-class", choices=["sync", "gthread"], default="gthread")
    ap.add_argument("--responder-key", choices=["p256", "rsa2048"], default="p256")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--keep", action="store_true", help="keep the temporary instance")
    ap.add_argument("--crl-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--instance", help=argparse.SUPPRESS)
    ap.add_argument("--key-id", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.crl_child:
        return crl_child(args)
    seconds = 4.0 if args.quick else 15.0
    runs = 1 if args.quick else 3
    n_certs = args.certs or (2000 if args.quick else 20000)
    tmp = Path(tempfile.mkdtemp(prefix="govca-bench-"))
    make_token(tmp)
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                 "platform": platform.platform()},
                     "settings": {"certs": n_certs, "seconds": seconds, "runs": runs,
                                  "workers": args.workers, "worker_class": args.worker_class,
                                  "responder_key": args.responder_key}, "rows": []}
    rows = results["rows"]
    results["machine"]["loadavg_start"] = os.getloadavg()

    def row(case, metric, value, unit, **extra):
        rows.append({"case": case, "metric": metric, "value": value, "unit": unit, **extra})
        print(f"{case:<58} {metric:<22} {value:>10.4g} {unit}", flush=True)

    print(f"setting up in {tmp}: {n_certs} serials, responder {args.responder_key}", flush=True)
    svc, issuing, serials = build_world(tmp, n_certs, args.responder_key,
                                        f"http://127.0.0.1:{port}")
    from crl.ocsp import OcspService
    ocsp_svc = OcspService(svc.db, svc.keys, svc.clock)
    signer = ocsp_svc.signer(issuing.id)
    ca_key = svc.keys.load(bytes.fromhex(issuing.key_id))
    raw = {}
    for label, key in ((f"responder {args.responder_key}", signer.key), ("CA rsa2048", ca_key)):
        for threads in (1, 2):
            raw[(label, threads)] = statistics.median(
                raw_rate(key, 2.0 if args.quick else 5.0, threads) for _ in range(runs))
            row(f"raw PKCS#11 sign, {label}, {threads} thread(s)", "signatures/s",
                raw[(label, threads)], "ops/s")
    t0 = time.perf_counter()
    signed = ocsp_svc.presign()
    dt_pre = time.perf_counter() - t0
    row(f"pre-sign {signed} OCSP answers ({args.responder_key})", "answers/s",
        signed / dt_pre, "ops/s", ratio_to_raw_1t=signed / dt_pre /
        raw[(f"responder {args.responder_key}", 1)])

    server = start_server(tmp, port, args.workers, args.worker_class)
    try:
        sample = random.Random(1).sample(serials, min(500, len(serials)))
        plain, _ = requests_for(issuing.certificate_der, sample, nonce=False)
        paths = ["/ocsp/" + base64.b64encode(b).decode() for b in plain]
        withnonce, nonce_at = requests_for(issuing.certificate_der, sample[:50], nonce=True)
        from bench import loadgen
        for c in (1, 16):
            res = [loadgen.run("127.0.0.1", port, method="GET", paths=paths, bodies=None,
                               headers={}, concurrency=c, seconds=seconds) for _ in range(runs)]
            med = {k: statistics.median(r[k] for r in res) for k in ("rps", "p50_ms", "p99_ms")}
            errors = sum(r["errors"] for r in res)
            row(f"OCSP GET pre-signed, c={c}", "responses/s", med["rps"], "req/s", errors=errors)
            row(f"OCSP GET pre-signed, c={c}", "p50 latency", med["p50_ms"], "ms")
            row(f"OCSP GET pre-signed, c={c}", "p99 latency", med["p99_ms"], "ms")
        for c in (1, 16):
            res = [loadgen.run("127.0.0.1", port, method="POST", paths=["/ocsp"],
                               bodies=withnonce, headers={
                                   "Content-Type": "application/ocsp-request"},
                               concurrency=c, seconds=seconds, nonce_at=nonce_at)
                   for _ in range(runs)]
            med = {k: statistics.median(r[k] for r in res) for k in ("rps", "p50_ms", "p99_ms")}
            errors = sum(r["errors"] for r in res)
            ratio = med["rps"] / raw[(f"responder {args.responder_key}", 2 if c > 1 else 1)]
            row(f"OCSP POST with nonce (HSM per answer), c={c}", "responses/s", med["rps"],
                "req/s", errors=errors, ratio_to_raw=ratio)
            row(f"OCSP POST with nonce (HSM per answer), c={c}", "ratio to raw HSM rate",
                ratio, "x")
            row(f"OCSP POST with nonce (HSM per answer), c={c}", "p99 latency", med["p99_ms"],
                "ms")
    finally:
        server.terminate()
        server.wait(timeout=10)
    for size in (int(x) for x in args.crl_sizes.split(",") if x):
        res = [crl_bench(tmp, issuing, size) for _ in range(runs if size < 1_000_000 else 1)]
        row(f"CRL {size:,} entries, build + sign (HSM rsa2048)", "wall time",
            statistics.median(r["total_s"] for r in res), "s",
            build_sign_s=statistics.median(r["build_sign_s"] for r in res))
        row(f"CRL {size:,} entries, build + sign (HSM rsa2048)", "peak RSS",
            statistics.median(r["peak_rss_mib"] for r in res), "MiB",
            bytes=res[0]["bytes"])
    results["machine"]["loadavg_end"] = os.getloadavg()
    print(f"load average (1, 5, 15 min) at start {results['machine']['loadavg_start']}, "
          f"at end {results['machine']['loadavg_end']} on {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(markdown(results))
    svc.close()
    if not args.keep:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


def markdown(results: dict) -> str:
    lines = ["| case | metric | value | unit |", "|---|---|---|---|"]
    for r in results["rows"]:
        v = r["value"]
        lines.append(f"| {r['case']} | {r['metric']} | {v:,.3g} | {r['unit']} |"
                     if v < 100 else f"| {r['case']} | {r['metric']} | {v:,.0f} | {r['unit']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
