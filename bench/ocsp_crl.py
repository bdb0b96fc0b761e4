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
    return raw_sign(key, seconds, threads)["rate"]


def raw_sign(key, seconds: float, threads: int) -> dict:
    """raw_rate() plus the CPU time this process spent per signature (µs, every thread,
    SoftHSM included): the denominator of the load-independent CPU ratio."""
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
    t0, c0 = time.perf_counter(), time.process_time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    n = max(1, sum(counts))
    return {"rate": sum(counts) / (time.perf_counter() - t0),
            "cpu_us": 1e6 * (time.process_time() - c0) / n}


def _raw_key(tmp: str, key_id: str):
    """The key `key_id` of the bench token, loaded in this (child) process with one PKCS#11
    session for this thread; an error string when SoftHSM's login race persists."""
    os.environ["SOFTHSM2_CONF"] = str(Path(tmp) / "softhsm2.conf")
    from ca.errors import HsmUnavailable
    from hsm.keys import per_thread
    from hsm.store import HsmKeyStore
    # One store (one pool) for every attempt: after a failed login (SoftHSM rewrites its token
    # file at each C_Login, so two processes logging in at the same instant can see a
    # GeneralError, or no token at all) the pool re-initialises the module at its next try --
    # SoftHSM rescans its token directory only in C_Initialize.
    store = HsmKeyStore(hsm_config(Path(tmp)))
    for attempt in range(10):
        try:
            key = per_thread(store.load(bytes.fromhex(key_id)))
            raw_sign(key, 0.05, 1)  # the session is open and the key found before the start
            return key
        except HsmUnavailable as exc:
            if attempt == 9:
                return f"error: {exc}"
            time.sleep(0.2 * (attempt + 1))


def _raw_proc(tmp: str, key_id: str, seconds: float, start_at: float, q) -> None:
    key = _raw_key(tmp, key_id)
    if isinstance(key, str):
        q.put(key)
        return
    time.sleep(max(0.0, start_at - time.time()))
    q.put(raw_sign(key, seconds, 1))


def _raw_server(tmp: str, key_id: str, threads: int, conn) -> None:
    """A RawSigners process: loads the key once, then signs for (start_at, seconds) with
    `threads` threads (a session each) whenever asked, until it gets None."""
    key = _raw_key(tmp, key_id)
    conn.send(key if isinstance(key, str) else "ready")
    while not isinstance(key, str):
        msg = conn.recv()
        if msg is None:
            return
        start_at, seconds = msg
        time.sleep(max(0.0, start_at - time.time()))
        conn.send(raw_sign(key, seconds, threads))


class RawSigners:
    """`procs` processes of `threads` threads that keep the key loaded, so that the raw rate of
    a server of `procs` worker processes (or of 2 threads: procs=1, threads=2) can be measured
    again and again during a case (bench/interleave.py) without the seconds of start-up and
    login each time. A context manager."""

    def __init__(self, tmp: Path, key_id: bytes, procs: int = 2, threads: int = 1) -> None:
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for _ in range(procs):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=_raw_server, args=(str(tmp), key_id.hex(), threads, theirs))
            p.start()
            self.conns.append(mine)
            self.procs.append(p)
        for c in self.conns:
            if not c.poll(120):
                raise RuntimeError("raw signing process did not start")
            got = c.recv()
            if got != "ready":
                self.close()
                raise RuntimeError(f"raw signing process failed: {got}")

    def measure(self, seconds: float) -> dict:
        """Signatures/s of all processes together (started together), CPU µs per signature."""
        start_at = time.time() + 0.05
        for c in self.conns:
            c.send((start_at, seconds))
        res = [c.recv() for c in self.conns]
        return {"rate": sum(r["rate"] for r in res),
                "cpu_us": statistics.mean(r["cpu_us"] for r in res)}

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send(None)
            except OSError:
                pass
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()

    def __enter__(self) -> "RawSigners":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def raw_sign_processes(tmp: Path, key_id: bytes, seconds: float, procs: int = 2) -> dict:
    """raw_sign() in `procs` processes at once (one thread each, started together): the raw
    rate of a key for a server of `procs` worker processes. Rates add up; CPU per signature is
    the mean."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    start_at = time.time() + 3.0 + 0.5 * procs  # after every child has loaded the key
    ps = [ctx.Process(target=_raw_proc, args=(str(tmp), key_id.hex(), seconds, start_at, q))
          for _ in range(procs)]
    for p in ps:
        p.start()
    res = [q.get(timeout=seconds + 120) for _ in ps]
    for p in ps:
        p.join(timeout=30)
    errors = [r for r in res if isinstance(r, str)]
    if errors:
        raise RuntimeError(f"raw signing process failed: {errors[0]}")
    return {"rate": sum(r["rate"] for r in res),
            "cpu_us": statistics.mean(r["cpu_us"] for r in res)}


# --- CRL child process (so that peak RSS is the CRL's own) -----------------------------------
def crl_child(args) -> None:
    from cryptography import x509  # noqa: F401
    from ca.clock import SystemClock
    from crl.crl_builder import CrlEntry, build_crl, consume
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
                    entries=consume(entries),
                    freshest_url="http://127.0.0.1/pki/crl/issuing-delta.crl")
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
# gunicorn worker classes (--worker-class): gthread is gunicorn's own threaded worker; ocsp is
# gthread plus the OCSP keep-alive fast path (crl/gunicorn_worker.py).
WORKER_CLASSES = {"gthread": "gthread", "ocsp": "crl.gunicorn_worker.OcspWorker"}


def start_server(tmp: Path, port: int, workers: int, worker_class: str, threads: int = 4,
                 keep_alive: int = 30, hsm_pool: int | None = None):
    env = dict(os.environ, GOVCA_INSTANCE=str(tmp),
               GOVCA_DATABASE_URL=f"sqlite:///{tmp / 'bench.sqlite3'}",
               GOVCA_PKCS11_TOKEN="bench", GOVCA_PKCS11_PIN_FILE=str(tmp / "pin"),
               GOVCA_BASE_URL=f"http://127.0.0.1:{port}", GOVCA_PROFILES_FILE=str(tmp / "p.json"))
    env.pop("GOVCA_SCHEDULER", None)
    if hsm_pool:
        env["GOVCA_PKCS11_POOL"] = str(hsm_pool)
    cmd = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers",
           str(workers), "--chdir", str(ROOT), "--log-level", "warning",
           "--keep-alive", str(keep_alive)]
    if worker_class in WORKER_CLASSES:
        cmd += ["--worker-class", WORKER_CLASSES[worker_class], "--threads", str(threads)]
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


def worker_pids(master: int) -> list[int]:
    """The gunicorn workers: the master's children."""
    out = []
    for task in Path(f"/proc/{master}/task").iterdir():
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU time of these processes so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# Where a sampled stack is, by its innermost matching frame (first match wins, innermost first).
PROFILE_BUCKETS = [
    ("HSM sign (PKCS#11 + SoftHSM)", ("pkcs11", "hsm/keys.py", "hsm/pool.py")),
    ("DB read (SQLAlchemy, sqlite3)", ("sqlalchemy", "sqlite3", "psycopg", "ocsp_store.py")),
    ("DER encode/parse (crl/der.py, ocsp_codec.py)", ("crl/der.py", "ocsp_codec.py")),
    ("OCSP service (crl/ocsp.py)", ("crl/ocsp.py",)),
    ("OCSP WSGI front (crl/http.py)", ("crl/http.py",)),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("Flask/werkzeug", ("flask", "werkzeug")),
    ("gunicorn HTTP parse/write", ("gunicorn/http",)),
    ("gunicorn worker loop, threads, poller", ("gunicorn", "selectors.py", "concurrent",
                                               "threading.py", "queue.py", "socket.py")),
]


def summarize_profile(raw: Path, top: int = 12, buckets_of=None) -> dict:
    """Share of samples per bucket (inclusive of callees; `buckets_of` defaults to
    PROFILE_BUCKETS), and the top functions by own samples, from py-spy's collapsed ('raw')
    output."""
    labels = buckets_of or PROFILE_BUCKETS
    buckets: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        try:
            n = int(n)
        except ValueError:
            continue
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        total += n
        leaf = frames[-1] if frames else "?"
        own[leaf] = own.get(leaf, 0) + n
        name = "other"
        for label, pats in labels:
            if any(p in f for f in frames for p in pats):
                name = label
                break
        buckets[name] = buckets.get(name, 0) + n
    return {"samples": total,
            "buckets": {k: round(v / total, 3) for k, v in
                        sorted(buckets.items(), key=lambda kv: -kv[1])} if total else {},
            "top_own": [(k, round(v / total, 3)) for k, v in
                        sorted(own.items(), key=lambda kv: -kv[1])[:top]] if total else []}


# gil: samples of threads holding the GIL (Python work); native: every thread that is running,
# with C frames (SoftHSM, OpenSSL); threads blocked in poll()/recv() count too (py-spy cannot
# tell them idle in this mode), so read it for the C frames, not for shares.
PROFILE_FLAGS = {"gil": ("--gil", "--nonblocking"), "native": ("--native",)}


class Profiler:
    """py-spy on the gunicorn workers while a case runs (GIL-holding samples only: CPU work)."""

    mode = "gil"

    def __init__(self, outdir: Path | None, master: int, buckets=None) -> None:
        self.outdir, self.master, self.procs, self.buckets = outdir, master, [], buckets

    def __enter__(self):
        if self.outdir is None:
            return self
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.files = []
        for pid in worker_pids(self.master):
            f = self.outdir / f"{self.name}-{pid}.txt"
            self.files.append(f)
            self.procs.append(subprocess.Popen(
                [str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(pid),
                 "--format", "raw", "-o", str(f), "--rate", "250",
                 "--nolineno", *PROFILE_FLAGS[self.mode]], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
        time.sleep(0.5)
        return self

    def case(self, name: str):
        self.name = name
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.send_signal(2)  # SIGINT: py-spy writes its output and exits
        for p in self.procs:
            p.wait(timeout=30)
        self.procs = []
        if self.outdir is not None:
            merged = self.outdir / f"{self.name}.txt"
            merged.write_text("".join(f.read_text() for f in self.files if f.exists()))
            self.summary = summarize_profile(merged, buckets_of=self.buckets)


def http_case(port: int, server, *, method, paths, bodies, headers, concurrency, seconds, runs,
              nonce_at=None, loadgen_procs=1, profile_dir=None, name="") -> dict:
    from bench import loadgen
    res = []
    workers = worker_pids(server.pid)
    prof = None
    kw = dict(method=method, paths=paths, bodies=bodies, headers=headers,
              concurrency=concurrency, seconds=seconds, nonce_at=nonce_at, procs=loadgen_procs)
    for _ in range(runs):
        s0 = cpu_seconds(workers)
        r = loadgen.run("127.0.0.1", port, **kw)
        n = max(1, r["requests"])
        r["server_cpu_us"] = 1e6 * (cpu_seconds(workers) - s0) / n
        res.append(r)
    if profile_dir is not None:
        # A separate run under the sampler, so that its cost stays out of the figures.
        prof = Profiler(profile_dir, server.pid).case(name)
        with prof:
            loadgen.run("127.0.0.1", port, **kw)
    out = {k: statistics.median(r[k] for r in res)
           for k in ("rps", "p50_ms", "p99_ms", "client_cpu_us", "server_cpu_us")}
    out["errors"] = sum(r["errors"] for r in res)
    if prof is not None and getattr(prof, "summary", None):
        out["profile"] = prof.summary
    return out


def requests_for(issuing_der: bytes, serials: list[str], nonce: bool):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp
    from crl.ocsp import _issuer_hashes
    issuer = x509.load_der_x509_certificate(issuing_der)
    nh, kh = _issuer_hashes(issuer)["sha1"]
    marker = b"\xa5" * 32
    out = []
    for serial in serials:
        b = ocsp.OCSPRequestBuilder().add_certificate_by_hash(nh, kh, int(serial, 16),
                                                             hashes.SHA1())
        if nonce:
            b = b.add_extension(x509.OCSPNonce(marker), critical=False)
        out.append(b.build().public_bytes(serialization.Encoding.DER))
    nonce_at = out[0].find(marker) if nonce else None
    return out, nonce_at


CASES = ("raw", "presign", "get", "nonce", "crl")


def _median_by_rate(results: list[dict]) -> dict:
    return sorted(results, key=lambda r: r["rate"])[len(results) // 2]


RESPONDER_SPECS = {"p256": ("ec", "secp256r1"), "rsa2048": ("rsa", "2048")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs, one repetition")
    ap.add_argument("--certs", type=int, default=None, help="issued serials in the database")
    ap.add_argument("--crl-sizes", default="10000,100000,1000000")
    ap.add_argument("--cases", default=",".join(CASES),
                    help=f"which cases to run, comma-separated from {','.join(CASES)}")
    ap.add_argument("--seconds", type=float, help="seconds per HTTP case (4 quick, 15 full)")
    ap.add_argument("--runs", type=int, help="repetitions per case (1 quick, 3 full)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--slices", type=int, help="nonce cases again in this many slices with the "
                    "raw rate around each (bench/interleave.py; 4 quick, 8 full, 0 = off)")
    ap.add_argument("--slice-seconds", type=float, help="seconds per slice (1.5 quick, 3 full)")
    ap.add_argument("--worker-class", choices=["sync", *WORKER_CLASSES], default="ocsp",
                    help="gunicorn worker: ocsp = crl.gunicorn_worker.OcspWorker (default), "
                         "gthread, sync")
    ap.add_argument("--threads", type=int, default=16,
                    help="threads per gthread/ocsp worker")
    ap.add_argument("--keep-alive", type=int, default=30, help="gunicorn --keep-alive seconds")
    ap.add_argument("--hsm-pool", type=int, default=None,
                    help="PKCS#11 sessions per worker (GOVCA_PKCS11_POOL; default: the "
                         "product's default, 4)")
    ap.add_argument("--loadgen-procs", type=int, default=1,
                    help="client processes sharing the connections (bench/loadgen.py)")
    ap.add_argument("--responder-key", default="rsa2048,p256",
                    help="responder key type(s), comma-separated from p256,rsa2048: the "
                         "pre-sign and nonce cases run for each, in this order (the first is "
                         "the one the GET cases use; rsa2048 is GovCA's default)")
    ap.add_argument("--profile", metavar="DIR",
                    help="py-spy the gunicorn workers during an extra run of each HTTP case; "
                         "collapsed stacks and a summary go to DIR")
    ap.add_argument("--profile-mode", choices=sorted(PROFILE_FLAGS), default="gil",
                    help="gil: Python work only (default); native: C frames too")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--keep", action="store_true", help="keep the temporary instance")
    ap.add_argument("--crl-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--instance", help=argparse.SUPPRESS)
    ap.add_argument("--key-id", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.crl_child:
        return crl_child(args)
    cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    if cases - set(CASES):
        ap.error(f"unknown case(s) {sorted(cases - set(CASES))}")
    responder_keys = [k.strip() for k in args.responder_key.split(",") if k.strip()]
    if not responder_keys or set(responder_keys) - set(RESPONDER_SPECS):
        ap.error("--responder-key: p256 and/or rsa2048")
    seconds = args.seconds or (4.0 if args.quick else 15.0)
    runs = args.runs or (1 if args.quick else 3)
    raw_seconds = 2.0 if args.quick else 5.0
    if args.slices is None:
        args.slices = 4 if args.quick else 8
    args.slice_seconds = args.slice_seconds or (1.5 if args.quick else 3.0)
    args.probe_seconds = 0.5 if args.quick else 1.0
    n_certs = args.certs or (2000 if args.quick else 20000)
    profile_dir = Path(args.profile) if args.profile else None
    Profiler.mode = args.profile_mode
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
                                  "threads": args.threads, "keep_alive": args.keep_alive,
                                  "hsm_pool": args.hsm_pool,
                                  "loadgen_procs": args.loadgen_procs,
                                  "responder_keys": responder_keys}, "rows": [],
                     "profiles": {}}
    rows = results["rows"]
    results["machine"]["loadavg_start"] = os.getloadavg()

    def row(case, metric, value, unit, **extra):
        rows.append({"case": case, "metric": metric, "value": value, "unit": unit,
                     "loadavg": os.getloadavg()[0], **extra})
        print(f"{case:<58} {metric:<22} {value:>10.4g} {unit}   (load {os.getloadavg()[0]:.1f})",
              flush=True)

    print(f"setting up in {tmp}: {n_certs} serials, responder {responder_keys[0]}, "
          f"load average {os.getloadavg()}", flush=True)
    svc, issuing, serials = build_world(tmp, n_certs, responder_keys[0],
                                        f"http://127.0.0.1:{port}")
    from ca.keys import KeySpec
    from crl.ocsp import OcspService
    from crl.responder import ResponderManager
    ocsp_svc = OcspService(svc.db, svc.keys, svc.clock)
    if "raw" in cases:
        ca_key = svc.keys.load(bytes.fromhex(issuing.key_id))
        for threads in (1, 2):
            r = _median_by_rate([raw_sign(ca_key, raw_seconds, threads) for _ in range(runs)])
            row(f"raw PKCS#11 sign, CA rsa2048, {threads} thread(s)", "signatures/s",
                r["rate"], "ops/s", cpu_us=r["cpu_us"])

    def http_rows(case, res, raw=None):
        extra = {"errors": res["errors"], "client_cpu_us": res["client_cpu_us"],
                 "server_cpu_us": res["server_cpu_us"]}
        if raw:
            extra["ratio_to_raw"] = res["rps"] / raw["rate"]
            extra["raw_rate"] = raw["rate"]
        row(case, "responses/s", res["rps"], "req/s", **extra)
        if res["errors"]:
            print(f"   !! {res['errors']} error(s): a status other than 200 or an empty body")
        if raw:
            row(case, "ratio to raw HSM rate", res["rps"] / raw["rate"], "x")
            # Load-independent: the signature's share of the CPU one answer costs (server +
            # client). At c=16 the two CPUs are saturated, so this is the ratio an idle
            # machine gives.
            row(case, "CPU ratio", raw["cpu_us"] / (res["server_cpu_us"] +
                                                   res["client_cpu_us"]), "x")
        row(case, "p50 latency", res["p50_ms"], "ms")
        row(case, "p99 latency", res["p99_ms"], "ms")
        row(case, "server CPU per answer", res["server_cpu_us"], "µs")
        row(case, "client CPU per answer", res["client_cpu_us"], "µs")
        if "profile" in res:
            results["profiles"][case] = res["profile"]
            print("   profile of the workers (share of "
                  f"{'GIL-holding' if Profiler.mode == 'gil' else 'all'} samples):")
            for k, v in res["profile"]["buckets"].items():
                print(f"     {v:6.1%}  {k}")
            print("   top functions (own samples):")
            for k, v in res["profile"]["top_own"][:8]:
                print(f"     {v:6.1%}  {k}")

    def interleaved_nonce(port, server, bodies, nonce_at, c, rk, signer, what):
        """The nonce case again in --slices slices of --slice-seconds, the raw rate of the same
        signers (1 thread for c=1, --workers processes for c=16) measured before the first and
        after every slice (bench/interleave.py): the ratio on a VM whose speed drifts."""
        from bench.interleave import interleaved
        procs = 1 if c == 1 else args.workers

        def one_slice(i):
            r = http_case(port, server, method="POST", paths=["/ocsp"], bodies=bodies,
                          headers={"Content-Type": "application/ocsp-request"},
                          concurrency=c, seconds=args.slice_seconds, runs=1, nonce_at=nonce_at)
            return {"n": r["rps"] * args.slice_seconds, "seconds": args.slice_seconds,
                    "errors": r["errors"]}
        with RawSigners(tmp, signer.key.key_id, procs) as signers:
            res = interleaved(one_slice, lambda: signers.measure(args.probe_seconds)["rate"],
                              args.slices)
        row(f"OCSP POST with nonce ({rk}, HSM per answer), c={c}",
            f"ratio to raw {what}, measured around each of {args.slices} slices",
            res["ratio"], "x", raw_refs=[round(x) for x in res["refs"]],
            slice_ratios=[round(x, 4) for x in res["slice_ratios"]],
            errors=sum(p["errors"] for p in res["parts"]))

    sample = random.Random(1).sample(serials, min(500, len(serials)))
    for idx, rk in enumerate(responder_keys):
        if idx > 0:  # a new responder of the next key type; its answers are pre-signed again
            ResponderManager(svc.db, svc.keys, svc.clock, svc.issuance,
                             key_spec=KeySpec(*RESPONDER_SPECS[rk])).ensure("issuing",
                                                                            force=True)
            ocsp_svc.forget()
        signer = ocsp_svc.signer(issuing.id)
        label = f"responder {rk}"
        raw = {}
        for threads in (1, 2):
            raw[threads] = _median_by_rate([raw_sign(signer.key, raw_seconds, threads)
                                            for _ in range(runs)])
            row(f"raw PKCS#11 sign, {label}, {threads} thread(s)", "signatures/s",
                raw[threads]["rate"], "ops/s", cpu_us=raw[threads]["cpu_us"])
            row(f"raw PKCS#11 sign, {label}, {threads} thread(s)", "CPU per signature",
                raw[threads]["cpu_us"], "µs")
        raw["procs"] = _median_by_rate([raw_sign_processes(tmp, signer.key.key_id, raw_seconds,
                                                           args.workers) for _ in range(runs)])
        row(f"raw PKCS#11 sign, {label}, {args.workers} processes", "signatures/s",
            raw["procs"]["rate"], "ops/s", cpu_us=raw["procs"]["cpu_us"])
        row(f"raw PKCS#11 sign, {label}, {args.workers} processes", "CPU per signature",
            raw["procs"]["cpu_us"], "µs")
        t0 = time.perf_counter()
        signed = ocsp_svc.presign()
        dt_pre = time.perf_counter() - t0
        if "presign" in cases:
            row(f"pre-sign {signed} OCSP answers ({rk})", "answers/s", signed / dt_pre, "ops/s",
                ratio_to_raw_1t=signed / dt_pre / raw[1]["rate"])
        get_here = "get" in cases and idx == 0
        if not (get_here or "nonce" in cases):
            continue
        server = start_server(tmp, port, args.workers, args.worker_class, args.threads,
                              args.keep_alive, args.hsm_pool)
        try:
            common = dict(seconds=seconds, runs=runs, loadgen_procs=args.loadgen_procs,
                          profile_dir=profile_dir)
            if get_here:
                plain, _ = requests_for(issuing.certificate_der, sample, nonce=False)
                paths = ["/ocsp/" + base64.b64encode(b).decode() for b in plain]
                # warm the workers' caches, as a running responder's are
                http_case(port, server, method="GET", paths=paths, bodies=None, headers={},
                          concurrency=4, seconds=1.0, runs=1)
                for c in (1, 16):
                    res = http_case(port, server, method="GET", paths=paths, bodies=None,
                                    headers={}, concurrency=c, name=f"get-c{c}", **common)
                    http_rows(f"OCSP GET pre-signed, c={c}", res)
            if "nonce" in cases:
                withnonce, nonce_at = requests_for(issuing.certificate_der, sample[:50],
                                                   nonce=True)
                for c in (1, 16):
                    # The raw rate right before and right after the case, same key, as many
                    # signers as the server has at once: one thread for c=1 (one request at a
                    # time); for c=16 one per worker process (--workers), each in its own
                    # process like the workers (a second thread in one process is not the same
                    # thing for P-256: its Python parts share one GIL). On a shared VM the rate
                    # drifts within minutes, hence before and after.
                    if c == 1:
                        what = "1 thread"

                        def measure():
                            return raw_sign(signer.key, raw_seconds, 1)
                    else:
                        what = f"{args.workers} processes"

                        def measure():
                            return raw_sign_processes(tmp, signer.key.key_id, raw_seconds,
                                                      args.workers)
                    before = measure()
                    res = http_case(port, server, method="POST", paths=["/ocsp"],
                                    bodies=withnonce,
                                    headers={"Content-Type": "application/ocsp-request"},
                                    concurrency=c, nonce_at=nonce_at,
                                    name=f"nonce-{rk}-c{c}", **common)
                    after = measure()
                    bracket = {k: (before[k] + after[k]) / 2 for k in ("rate", "cpu_us")}
                    row(f"raw PKCS#11 sign, {label}, {what}, around the next case",
                        "signatures/s", bracket["rate"], "ops/s", before=before["rate"],
                        after=after["rate"], cpu_us=bracket["cpu_us"])
                    http_rows(f"OCSP POST with nonce ({rk}, HSM per answer), c={c}", res,
                              bracket)
                    if args.slices:
                        interleaved_nonce(port, server, withnonce, nonce_at, c, rk, signer,
                                          what)
        finally:
            server.terminate()
            server.wait(timeout=10)
    if "crl" in cases:
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
