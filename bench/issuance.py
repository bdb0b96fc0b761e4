"""Benchmark of certificate issuance: through the core service (`IssuanceService.issue`) and
through the REST API under gunicorn (create a request + approve it with a second token: the
contract's two-person flow; one certificate per pair of calls, and in batches: POST
/requests/batch + POST /requests/approve-batch, N certificates per pair of calls), for RSA-2048, RSA-3072 and P-256 issuing CAs, with 1 and N
concurrent clients, each figure beside the raw PKCS#11 signing rate of the same CA key measured
in the same run (1 and 2 threads, and 2 processes).

    .venv/bin/python bench/issuance.py --quick           # ~2 minutes
    .venv/bin/python bench/issuance.py                   # longer runs + 100k memory run
    .venv/bin/python bench/issuance.py --count 20 --keys p256 --no-api   # smoke

Every issued certificate goes through the whole cycle: CSR check, profile, lint gate, serial
reservation + audit intent, HSM signature, check of the signature, store + audit.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ocsp_crl import USER_PIN, hsm_config, make_token, raw_rate  # noqa: E402,F401
from bench.interleave import interleaved  # noqa: E402
from bench.ocsp_crl import (Profiler, RawSigners, children_cpu, cpu_seconds,  # noqa: E402
                             raw_sign_processes, worker_pids)

# Where a sampled stack of the API server is (--profile): the first label whose pattern is in
# any frame wins, so the list goes from the most specific to the most general.
ISSUANCE_BUCKETS = [
    ("HSM sign (PKCS#11 + SoftHSM)", ("pkcs11", "hsm/keys.py", "hsm/pool.py")),
    ("release check (check_signed)", ("check_signed",)),
    ("CSR parse + proof of possession", ("parse_csr", "ca/csr.py")),
    ("audit chain", ("ca/audit",)),
    ("issue_batch: prepare", ("_prepare", "template.py", "builder.py", "lint.py")),
    ("issue_batch: reserve/store", ("issue_batch",)),
    ("approve-batch: claims, states", ("approval_batch.py", "approval.py")),
    ("batch create: checks, inserts", ("requests.py", "v1_batch.py")),
    ("SQL elsewhere (SQLAlchemy, sqlite3)", ("sqlalchemy", "sqlite3", "psycopg")),
    ("Flask, JSON, auth", ("flask", "werkzeug", "json", "ra_portal")),
    ("gunicorn, threads", ("gunicorn", "threading.py", "selectors.py", "socket.py")),
]

KEYS = {"rsa2048": ("rsa", "2048"), "rsa3072": ("rsa", "3072"), "p256": ("ec", "secp256r1")}


def rss_mib() -> float:
    """Current resident set size (MiB) from /proc."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- world: token, database, CAs, demo organisations, staff and users ----------------------
def build_world(tmp: Path, key: str, base_url: str, hsm_dir: Path | None = None):
    """A throw-away instance whose issuing CA `issuing` has the given key type (the REST API
    issues from the CA named `issuing`), made by the key ceremony, with the demo organisations,
    staff and RA users."""
    import datetime as dt  # noqa: F401
    import random
    from sqlalchemy import inspect
    from ca.ceremony import CAParameters
    from ca.keys import KeySpec
    from ca.names import SubjectData
    from ca.store import schema  # noqa: F401
    from ca.store.base import Base
    from ca.store.database import make_engine
    from ra_portal import demo
    from ra_portal.settings import Settings
    from ra_portal.wiring import build_services
    url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    settings = Settings(instance=tmp, database_url=url, base_url=base_url,
                        secret_key_file=tmp / "secret", listen="127.0.0.1:0",
                        profiles_file=tmp / "profiles.json", hsm=hsm_config(hsm_dir or tmp))
    svc = build_services(settings, engine=engine)
    org = "Ban Cơ yếu Chính phủ"
    cer = svc.ceremony(actor="bench")
    root_spec = KeySpec("ec", "secp384r1") if key == "p256" else KeySpec("rsa", "3072")
    cer.init_root(CAParameters(name="root", key_spec=root_spec, validity_days=3650,
                               subject=SubjectData(common_name="Bench Root", organization=org)))
    issuing = cer.init_issuing(CAParameters(
        name="issuing", key_spec=KeySpec(*KEYS[key]), validity_days=1825,
        subject=SubjectData(common_name=f"Bench Issuing {key}", organization=org)),
        parent="root", profile=svc.profiles["sub-ca"]).ca
    now = svc.clock.now()
    with svc.db.transaction() as s:
        demo.seed_organisations(s, now)
        demo.seed_staff(s, now, random.Random(2025))
    with svc.db.transaction() as s:
        demo.backfill_versions(s, now)
    from ca.store.models import Subscriber
    with svc.db.transaction() as s:
        demo.seed_holidays(s)
        demo.seed_users(s, now)
    del inspect
    with svc.db.transaction() as s:
        from sqlalchemy import select
        subs = s.execute(select(Subscriber.id, Subscriber.username).where(
            Subscriber.kind == "person").order_by(Subscriber.id)).all()
    hanoi = [i for i, u in subs if u and u.startswith("staff.hanoi.")]
    return svc, issuing, hanoi


def make_csrs(n: int, seed: int = 0) -> list[str]:
    """n CSRs of fresh P-256 subscriber keys (distinct keys: the duplicate-key rule)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    out = []
    for _ in range(n):
        k = ec.generate_private_key(ec.SECP256R1())
        out.append(x509.CertificateSigningRequestBuilder().subject_name(name).sign(
            k, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    return out


# --- raw signing, 2 processes ----------------------------------------------------------------
def raw_rate_processes(tmp: Path, key_id: str, seconds: float, procs: int = 2) -> float:
    """Signatures/s of the CA key in `procs` processes at once (bench/ocsp_crl.py's, which
    retries SoftHSM's login race with one pool per process and starts them together)."""
    return raw_sign_processes(tmp, bytes.fromhex(key_id), seconds, procs)["rate"]


# --- core service ---------------------------------------------------------------------------
def core_run(svc, subscriber_ids: list[int], csrs: list[str], threads: int) -> dict:
    """Issue len(csrs) certificates with `threads` concurrent callers of IssuanceService.issue.
    Returns certs/s and the error count."""
    from ca.issuance.service import IssueRequest
    issuance = svc.issuance()
    it = iter(enumerate(csrs))
    lock = threading.Lock()
    errors: list[str] = []
    done = [0]

    def worker():
        while True:
            with lock:
                nxt = next(it, None)
            if nxt is None:
                return
            i, csr = nxt
            try:
                issuance.issue(IssueRequest(
                    ca="issuing", profile="personal", csr=csr, actor="bench",
                    subscriber_id=subscriber_ids[i % len(subscriber_ids)]))
                with lock:
                    done[0] += 1
            except Exception as exc:  # counted and shown, never hidden
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    return {"rate": done[0] / wall, "n": done[0], "errors": len(errors),
            "first_error": errors[0] if errors else None, "wall_s": wall}


def core_batch_run(svc, subscriber_ids: list[int], csrs: list[str], batch: int) -> dict:
    """IssuanceService.issue_batch over len(csrs) requests in batches of `batch`."""
    return issue_batches(svc.issuance(), subscriber_ids, csrs, batch)


def issue_batches(issuance, subscriber_ids: list[int], csrs: list[str], batch: int) -> dict:
    """`issuance.issue_batch` over len(csrs) personal-certificate requests in batches of
    `batch`: rate, count, errors (bench/scale.py uses it too)."""
    from ca.issuance.service import IssueRequest
    n, errors, first = 0, 0, None
    t0 = time.perf_counter()
    for k in range(0, len(csrs), batch):
        reqs = [IssueRequest(ca="issuing", profile="personal", csr=c, actor="bench",
                             subscriber_id=subscriber_ids[(k + j) % len(subscriber_ids)])
                for j, c in enumerate(csrs[k:k + batch])]
        for r in issuance.issue_batch(reqs):
            if isinstance(r, Exception):
                errors += 1
                first = first or f"{type(r).__name__}: {r}"
            else:
                n += 1
    wall = time.perf_counter() - t0
    return {"rate": n / wall, "n": n, "errors": errors, "first_error": first, "wall_s": wall}


def _core_proc(db_url, hsm_dir, base_url, subs, csrs, batch, ready, go, q):
    """One worker process (like a gunicorn worker): its own engine and HSM session pool."""
    os.environ["SOFTHSM2_CONF"] = str(Path(hsm_dir) / "softhsm2.conf")
    sys.path.insert(0, str(ROOT))
    from ca.clock import SystemClock
    from ca.issuance.service import IssuanceService, IssueRequest
    from ca.profiles import builtin_profiles
    from ca.store.database import Database, make_engine
    from hsm.store import HsmKeyStore
    svc = IssuanceService(Database(make_engine(db_url)), HsmKeyStore(hsm_config(Path(hsm_dir))),
                          SystemClock(), builtin_profiles(), base_url)
    # warm: key handle, lint shape, connection
    svc.issue(IssueRequest(ca="issuing", profile="personal", csr=csrs[0], actor="bench",
                           subscriber_id=subs[0]))
    ready.set()
    go.wait()
    n, errors, first = 0, 0, None
    t0 = time.perf_counter()
    work = csrs[1:]
    for k in range(0, len(work), batch):
        reqs = [IssueRequest(ca="issuing", profile="personal", csr=c, actor="bench",
                             subscriber_id=subs[(k + j) % len(subs)])
                for j, c in enumerate(work[k:k + batch])]
        res = svc.issue_batch(reqs) if batch > 1 else []
        if batch == 1:
            try:
                res = [svc.issue(reqs[0])]
            except Exception as exc:
                res = [exc]
        for r in res:
            if isinstance(r, Exception):
                errors += 1
                first = first or f"{type(r).__name__}: {r}"
            else:
                n += 1
    q.put((n, errors, first, time.perf_counter() - t0))


def core_procs_run(db_url: str, hsm_dir: Path, base_url: str, subs: list[int],
                   csrs: list[str], procs: int, batch: int = 1) -> dict:
    """`procs` worker processes issuing concurrently (the way gunicorn workers would)."""
    ctx = mp.get_context("spawn")
    q, go = ctx.Queue(), ctx.Event()
    readies = [ctx.Event() for _ in range(procs)]
    parts = [csrs[i::procs] for i in range(procs)]
    ps = [ctx.Process(target=_core_proc, args=(db_url, str(hsm_dir), base_url, subs, part,
                                                batch, readies[i], go, q))
          for i, part in enumerate(parts)]
    for p in ps:
        p.start()
    for e in readies:
        e.wait(timeout=300)
    t0 = time.perf_counter()
    go.set()
    res = [q.get(timeout=3600) for _ in ps]
    wall = time.perf_counter() - t0
    for p in ps:
        p.join(timeout=30)
    n = sum(r[0] for r in res)
    return {"rate": n / wall, "n": n, "errors": sum(r[1] for r in res),
            "first_error": next((r[2] for r in res if r[2]), None), "wall_s": wall}


def memory_run(svc, subscriber_ids: list[int], total: int, threads: int,
               samples: int = 10) -> dict:
    """Issue `total` certificates in chunks and sample RSS after each chunk (flat = no leak)."""
    chunk = max(1, total // samples)
    rss = []
    n = 0
    t0 = time.perf_counter()
    seed = 1000
    while n < total:
        csrs = make_csrs(min(chunk, total - n), seed)
        seed += 1
        r = core_run(svc, subscriber_ids, csrs, threads)
        if r["errors"]:
            raise RuntimeError(r["first_error"])
        n += r["n"]
        rss.append(rss_mib())
    return {"n": n, "rate": n / (time.perf_counter() - t0), "rss_samples": rss}


# --- REST API under gunicorn ------------------------------------------------------------------
def start_server(tmp: Path, port: int, workers: int, threads: int, hsm_dir: Path,
                 worker_class: str = "sync"):
    """gunicorn as `govca serve` runs it: `sync` workers, each serving one request at a time
    and closing the connection after it, so that every request goes to a worker that is free.
    `gthread` (with `threads` threads and keep-alive) to compare: a kept-alive connection stays
    with the worker that accepted it, and the clients' connections, opened together, land on
    the workers unevenly (docs/performance-issuance.md §2e)."""
    env = dict(os.environ, GOVCA_INSTANCE=str(tmp),
               GOVCA_DATABASE_URL=f"sqlite:///{tmp / 'bench.sqlite3'}",
               GOVCA_PKCS11_TOKEN="bench", GOVCA_PKCS11_PIN_FILE=str(hsm_dir / "pin"),
               GOVCA_BASE_URL=f"http://127.0.0.1:{port}",
               GOVCA_PROFILES_FILE=str(tmp / "profiles.json"),
               GOVCA_SECRET_KEY_FILE=str(tmp / "secret"))
    env.pop("GOVCA_SCHEDULER", None)
    cmd = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers",
           str(workers), "--worker-class", worker_class]
    if worker_class == "gthread":
        cmd += ["--threads", str(threads), "--keep-alive", "30"]
    cmd += ["--chdir", str(ROOT), "--log-level", "warning", "wsgi:app"]
    proc = subprocess_popen(cmd, env, tmp / "server.log")
    import urllib.request
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError((tmp / "server.log").read_text()[-3000:])


def subprocess_popen(cmd, env, log):
    import subprocess
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT)


def _api_client(port, ra_token, approver_token, subs, csrs, q):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    n, errors, first, lat = 0, 0, None, []

    def call(method, path, token, body=None):
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Authorization": f"Bearer {token}",
                              "Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    for i, csr in enumerate(csrs):
        t0 = time.perf_counter()
        try:
            st, body = call("POST", "/api/v1/requests", ra_token,
                            {"type": "issue", "subscriber_id": subs[i % len(subs)],
                             "profile": "personal", "csr_pem": csr})
            if st != 201:
                raise RuntimeError(f"create {st} {body[:200]!r}")
            rid = json.loads(body)["id"]
            st, body = call("POST", f"/api/v1/requests/{rid}/approve", approver_token, {})
            data = json.loads(body)
            if st != 200 or data.get("state") != "issued" or not data.get("certificate_serial"):
                raise RuntimeError(f"approve {st} {body[:300]!r}")
            n += 1
        except Exception as exc:
            errors += 1
            first = first or str(exc)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        lat.append(time.perf_counter() - t0)
    q.put((n, errors, first, lat))


def api_run(port, ra_token, approver_token, subs, csrs, clients: int) -> dict:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    parts = [csrs[i::clients] for i in range(clients)]
    ps = [ctx.Process(target=_api_client, args=(port, ra_token, approver_token, subs, part, q))
          for part in parts]
    t0 = time.perf_counter()
    for p in ps:
        p.start()
    res = [q.get(timeout=3600) for _ in ps]
    wall = time.perf_counter() - t0
    for p in ps:
        p.join(timeout=10)
    lat = sorted(x for r in res for x in r[3])
    n = sum(r[0] for r in res)
    return {"rate": n / wall, "n": n, "errors": sum(r[1] for r in res),
            "first_error": next((r[2] for r in res if r[2]), None),
            "p50_ms": 1000 * statistics.median(lat) if lat else None}


def _api_batch_client(port, ra_token, approver_token, subs, csrs, batch, q):
    """POST /requests/batch (create + submit `batch` requests), then POST
    /requests/approve-batch with their ids by the second token; counts certificates returned."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    n, errors, first, lat = 0, 0, None, []

    def call(method, path, token, body):
        conn.request(method, path, body=json.dumps(body),
                     headers={"Authorization": f"Bearer {token}",
                              "Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    for k in range(0, len(csrs), batch):
        part = csrs[k:k + batch]
        t0 = time.perf_counter()
        try:
            st, body = call("POST", "/api/v1/requests/batch", ra_token, {"requests": [
                {"type": "issue", "subscriber_id": subs[(k + j) % len(subs)],
                 "profile": "personal", "csr_pem": csr} for j, csr in enumerate(part)]})
            if st != 200:
                raise RuntimeError(f"create batch {st} {body[:200]!r}")
            res = json.loads(body)["results"]
            bad = [r for r in res if not r["ok"]]
            errors += len(bad)
            if bad:
                first = first or f"create: {bad[0]['error']}"
            ids = [r["request"]["id"] for r in res if r["ok"]]
            st, body = call("POST", "/api/v1/requests/approve-batch", approver_token,
                            {"ids": ids})
            if st != 200:
                raise RuntimeError(f"approve batch {st} {body[:300]!r}")
            for r in json.loads(body)["results"]:
                if r["ok"] and r.get("certificate", {}).get("pem"):
                    n += 1
                else:
                    errors += 1
                    first = first or f"approve: {r.get('error') or r['request']['state']}"
        except Exception as exc:
            errors += len(part)
            first = first or str(exc)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        lat.append(time.perf_counter() - t0)
    q.put((n, errors, first, lat))


def api_batch_run(port, ra_token, approver_token, subs, csrs, clients: int, batch: int) -> dict:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    parts = [csrs[i::clients] for i in range(clients)]
    ps = [ctx.Process(target=_api_batch_client,
                      args=(port, ra_token, approver_token, subs, part, batch, q))
          for part in parts]
    t0 = time.perf_counter()
    for p in ps:
        p.start()
    res = [q.get(timeout=3600) for _ in ps]
    wall = time.perf_counter() - t0
    for p in ps:
        p.join(timeout=10)
    lat = sorted(x for r in res for x in r[3])
    n = sum(r[0] for r in res)
    return {"rate": n / wall, "n": n, "seconds": wall, "errors": sum(r[1] for r in res),
            "first_error": next((r[2] for r in res if r[2]), None),
            "p50_ms": 1000 * statistics.median(lat) if lat else None, "latencies": lat}


def api_batch_interleaved(port, ra_token, approver_token, subs, csrs, clients: int, batch: int,
                          probe, slices: int, server_pid: int | None = None) -> dict:
    """api_batch_run() in `slices` slices with the raw rate measured around each
    (bench/interleave.py); rate, ratio to raw, errors, p50 over all slices, and the gunicorn
    workers' CPU time per certificate (user + system, the HSM's signing included: SoftHSM runs
    in the workers), a figure the VM's swings move far less than the rate."""
    size = -(-len(csrs) // slices)
    workers = worker_pids(server_pid) if server_pid else []

    def part(i):
        cpu0, client0 = cpu_seconds(workers), children_cpu()
        r = api_batch_run(port, ra_token, approver_token, subs, csrs[i * size:(i + 1) * size],
                          clients, batch)  # its client processes are joined: in children_cpu
        r["server_cpu"], r["client_cpu"] = cpu_seconds(workers) - cpu0, children_cpu() - client0
        return r
    res = interleaved(part, probe, slices)
    parts = res["parts"]
    done = sum(r["n"] for r in parts)
    lat = sorted(x for r in parts for x in r["latencies"])
    return {"rate": res["rate"], "ratio": res["ratio"], "raw_mean": res["raw_mean"],
            "refs": [round(r) for r in res["refs"]],
            "slice_ratios": [round(r, 4) for r in res["slice_ratios"]],
            "errors": sum(r["errors"] for r in parts),
            "first_error": next((r["first_error"] for r in parts if r["first_error"]), None),
            "p50_ms": 1000 * statistics.median(lat) if lat else None,
            "server_cpu_us": 1e6 * sum(r["server_cpu"] for r in parts) / done
            if workers and done else None,
            "client_cpu_us": 1e6 * sum(r["client_cpu"] for r in parts) / done if done else None}


# --- one key type -----------------------------------------------------------------------------
def bench_key(key: str, args, row, hsm_dir: Path) -> None:
    """One key type: its own database (the API issues from the CA named `issuing`); the
    SoftHSM token is shared by the whole run (a PKCS#11 module is initialised once per
    process)."""
    from ca.ra.authn import create_token
    tmp = Path(tempfile.mkdtemp(prefix=f"govca-bench-iss-{key}-", dir=hsm_dir))
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        svc, issuing, subs = build_world(tmp, key, f"http://127.0.0.1:{port}", hsm_dir)
        ca_key = svc.keys.load(bytes.fromhex(issuing.key_id))
        raw = {}
        for threads in (1, 2):
            raw[f"{threads}t"] = max(raw_rate(ca_key, args.raw_seconds, threads)
                                     for _ in range(args.runs))
            row(key, f"raw PKCS#11 sign, {threads} thread(s)", raw[f"{threads}t"], "sig/s")
        raw["2p"] = max(raw_rate_processes(hsm_dir, issuing.key_id, args.raw_seconds)
                        for _ in range(args.runs))
        row(key, "raw PKCS#11 sign, 2 processes", raw["2p"], "sig/s")
        ref = raw["2t"] if key.startswith("rsa") else raw["2p"]
        ref_name = "raw 2 threads" if key.startswith("rsa") else "raw 2 processes"

        # warm-up (lint templates, key handles, connection pool), not measured
        core_run(svc, subs, make_csrs(min(20, args.count)), 1)
        if args.core:  # --no-core: raw and API rows only
            for clients in (1, args.clients):
                res = [core_run(svc, subs, make_csrs(args.count), clients)
                       for _ in range(args.runs)]
                best = statistics.median(r["rate"] for r in res)
                errs = sum(r["errors"] for r in res)
                row(key, f"core IssuanceService.issue, {clients} thread(s)", best, "certs/s",
                    ratio=best / ref, ref=ref_name, errors=errs,
                    first_error=next((r["first_error"] for r in res if r["first_error"]),
                                     None))
            res = [core_batch_run(svc, subs, make_csrs(args.count), args.batch)
                   for _ in range(args.runs)]
            rate = statistics.median(r["rate"] for r in res)
            row(key, f"core issue_batch (batches of {args.batch}), 1 thread", rate, "certs/s",
                ratio=rate / ref, ref=ref_name, errors=sum(r["errors"] for r in res),
                first_error=next((r["first_error"] for r in res if r["first_error"]), None))
            db_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
            for batch in (1, args.batch):
                res = [core_procs_run(db_url, hsm_dir, f"http://127.0.0.1:{port}", subs,
                                      make_csrs(args.count + args.procs), args.procs, batch)
                       for _ in range(args.runs)]
                rate = statistics.median(r["rate"] for r in res)
                what = "issue" if batch == 1 else f"issue_batch ({batch})"
                row(key, f"core {what}, {args.procs} processes", rate, "certs/s",
                    ratio=rate / ref, ref=ref_name, errors=sum(r["errors"] for r in res),
                    first_error=next((r["first_error"] for r in res if r["first_error"]), None))
            row(key, "core: peak RSS of the bench process", peak_rss_mib(), "MiB")
            if args.memory and key == "rsa2048":
                m = memory_run(svc, subs, args.memory, args.clients)
                first, last = m["rss_samples"][0], m["rss_samples"][-1]
                row(key, f"memory run: {m['n']:,} certs, RSS first→last sample", last - first,
                    "MiB", rate=m["rate"], rss_samples=m["rss_samples"])
                row(key, f"memory run: {m['n']:,} certs, rate", m["rate"], "certs/s",
                    ratio=m["rate"] / ref, ref=ref_name)

        if args.api:
            ra_tok = create_token(svc.db, svc.clock, "ra.hanoi", actor="bench").token
            ap_tok = create_token(svc.db, svc.clock, "approver.hanoi", actor="bench").token
            svc.close()
            server = start_server(tmp, port, args.workers, args.threads, hsm_dir,
                                  args.worker_class)
            print(f"{key}: gunicorn {args.workers} {args.worker_class} workers"
                  + (f" x {args.threads} threads, keep-alive" if args.worker_class == "gthread"
                     else " (as `govca serve`)"), flush=True)
            try:
                api_run(port, ra_tok, ap_tok, subs, make_csrs(min(10, args.count)), 1)  # warm
                for clients in (1, args.clients):
                    r = api_run(port, ra_tok, ap_tok, subs, make_csrs(args.api_count), clients)
                    row(key, f"REST API create + approve (gunicorn), {clients} client(s)",
                        r["rate"], "certs/s", ratio=r["rate"] / ref, ref=ref_name,
                        errors=r["errors"], first_error=r["first_error"], p50_ms=r["p50_ms"])
                api_batch_run(port, ra_tok, ap_tok, subs, make_csrs(min(20, args.count)), 1,
                              10)  # warm the batch path (lint shape, key handles)
                # The target rows: the raw rate of the reference (2 threads for RSA, 2
                # processes for P-256) measured before the first and after every slice.
                procs, threads = (1, 2) if key.startswith("rsa") else (2, 1)
                with RawSigners(hsm_dir, bytes.fromhex(issuing.key_id), procs,
                                threads) as signers:
                    def probe():
                        return signers.measure(args.probe_seconds)["rate"]
                    for clients in (1, args.clients):
                        r = api_batch_interleaved(
                            port, ra_tok, ap_tok, subs, make_csrs(args.api_batch_count),
                            clients, args.api_batch, probe, args.slices, server.pid)
                        row(key, f"REST API batch create+approve (batches of {args.api_batch}), "
                            f"{clients} client(s)", r["rate"], "certs/s", ratio=r["ratio"],
                            ref=f"{ref_name}, around each of {args.slices} slices",
                            errors=r["errors"], first_error=r["first_error"],
                            p50_ms=r["p50_ms"], raw_mean=r["raw_mean"], raw_refs=r["refs"],
                            slice_ratios=r["slice_ratios"])
                        if r["server_cpu_us"] is not None:
                            row(key, f"REST API batch, {clients} client(s): server CPU per "
                                f"certificate (HSM signature included)", r["server_cpu_us"],
                                "µs")
                            row(key, f"REST API batch, {clients} client(s): client CPU per "
                                f"certificate", r["client_cpu_us"], "µs")
                if args.profile:  # an extra, unmeasured run with py-spy on the workers
                    prof = Profiler(Path(args.profile), server.pid, ISSUANCE_BUCKETS)
                    with prof.case(f"issuance-api-batch-{key}"):
                        api_batch_run(port, ra_tok, ap_tok, subs,
                                      make_csrs(args.api_batch_count), args.clients,
                                      args.api_batch)
                    print(f"profile {key} ({prof.summary['samples']} samples, "
                          f"{args.profile}/issuance-api-batch-{key}.txt):", flush=True)
                    for label, share in prof.summary["buckets"].items():
                        print(f"  {share:6.1%}  {label}", flush=True)
                    for fn, share in prof.summary["top_own"][:8]:
                        print(f"  own {share:6.1%}  {fn}", flush=True)
            finally:
                server.terminate()
                server.wait(timeout=20)
        else:
            svc.close()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def markdown(rows: list[dict]) -> str:
    lines = ["| key | case | value | unit | ratio to raw | raw reference | errors |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        v = r["value"]
        val = f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.3g}"
        ratio = f"{r['ratio']:.1%}" if r.get("ratio") is not None else ""
        lines.append(f"| {r['key']} | {r['case']} | {val} | {r['unit']} | {ratio} | "
                     f"{r.get('ref', '')} | {r.get('errors', '')} |")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized run")
    ap.add_argument("--keys", default="rsa2048,rsa3072,p256")
    ap.add_argument("--count", type=int, help="certificates per core run")
    ap.add_argument("--api-count", type=int, help="certificates per API run")
    ap.add_argument("--clients", type=int, default=4, help="N concurrent clients")
    ap.add_argument("--workers", type=int, default=None,
                    help="gunicorn workers (default: as `govca serve`, 1 per CPU, at least 2)")
    ap.add_argument("--procs", type=int, default=2, help="worker processes of the core rows")
    ap.add_argument("--batch", type=int, default=50, help="requests per issue_batch call")
    ap.add_argument("--worker-class", choices=["sync", "gthread"], default=None,
                    help="gunicorn worker class: sync (as `govca serve`; the default) or "
                         "gthread (keep-alive, --threads threads; the default when --threads > 1)")
    ap.add_argument("--threads", type=int, default=1,
                    help="gunicorn threads per worker (gthread only)")
    ap.add_argument("--api-batch", type=int, default=50,
                    help="requests per POST /requests/batch and /requests/approve-batch")
    ap.add_argument("--api-batch-count", type=int,
                    help="certificates per API batch run")
    ap.add_argument("--slices", type=int, help="slices of each API batch run, the raw rate "
                    "measured around each (4 quick, 8 full)")
    ap.add_argument("--memory", type=int, help="certificates in the memory-flatness run "
                    "(full mode: 100000; 0 = off)")
    ap.add_argument("--no-api", dest="api", action="store_false")
    ap.add_argument("--no-core", dest="core", action="store_false",
                    help="skip the core rows (and the memory run): raw and API rows only")
    ap.add_argument("--profile", metavar="DIR",
                    help="py-spy on the gunicorn workers during one extra, unmeasured API batch "
                         "run per key (N clients); collapsed stacks in DIR and a summary")
    ap.add_argument("--json", help="write the rows here too")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    if args.worker_class is None:
        args.worker_class = "gthread" if args.threads > 1 else "sync"
    elif args.worker_class == "sync" and args.threads > 1:
        ap.error("--threads applies to --worker-class gthread (gunicorn would switch to it)")
    if args.workers is None:  # what `govca serve` starts on this machine
        from ra_portal.cli.core import serve_workers
        args.workers = serve_workers()
    args.runs = 1 if args.quick else 3
    args.count = args.count or (300 if args.quick else 2000)
    args.api_count = args.api_count or (200 if args.quick else 1000)
    args.api_batch_count = args.api_batch_count or (1600 if args.quick else 4800)
    args.slices = args.slices or (4 if args.quick else 8)
    args.raw_seconds = 1.5 if args.quick or args.count < 100 else 4.0
    args.probe_seconds = 0.5 if args.quick else 1.0
    if args.memory is None:
        args.memory = 0 if args.quick else 100_000
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    rows: list[dict] = []
    load_start = os.getloadavg()

    def row(key, case, value, unit, **extra):
        rows.append({"key": key, "case": case, "value": value, "unit": unit, **extra})
        ratio = f"  ({extra['ratio']:.1%} of {extra['ref']})" if "ratio" in extra else ""
        err = f"  errors={extra['errors']}" if extra.get("errors") else ""
        print(f"{key:<8} {case:<58} {value:>10.4g} {unit}{ratio}{err}", flush=True)
        if extra.get("first_error"):
            print(f"         first error: {extra['first_error']}", flush=True)

    print(f"issuance bench: {args.count} certs per core run, {args.api_count} per API run, "
          f"N={args.clients}, runs={args.runs}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load {load_start}", flush=True)
    hsm_dir = Path(tempfile.mkdtemp(prefix="govca-bench-iss-"))
    try:
        make_token(hsm_dir)
        for key in args.keys.split(","):
            bench_key(key, args, row, hsm_dir)
    finally:
        if not args.keep:
            shutil.rmtree(hsm_dir, ignore_errors=True)
    load_end = os.getloadavg()
    print(f"load average (1, 5, 15 min) at start {load_start}, at end {load_end}")
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "load_start": load_start,
                                               "load_end": load_end}, indent=2, default=str))
    return rows


if __name__ == "__main__":
    main()
