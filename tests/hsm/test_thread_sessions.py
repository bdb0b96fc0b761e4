"""Per-thread PKCS#11 sessions (hsm/pool.py SessionPool.sign(per_thread=True), hsm.keys.per_thread):
what the OCSP responder signs with. A thread keeps its own session; after a reset, a
re-initialisation of the module (by any pool of the process) or a fork, the old session is never
used again; beyond the limit the shared pool is used."""
from __future__ import annotations

import os
import threading

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from ca.keys import KeySpec
from hsm import library
from hsm.keys import per_thread
from hsm.pool import SessionPool
from hsm.store import HsmKeyStore


@pytest.fixture(scope="module")
def keys(key_store):
    made = {"rsa": key_store.generate(KeySpec("rsa", "2048"), "test-thread-rsa"),
            "ec": key_store.generate(KeySpec("ec", "secp256r1"), "test-thread-ec")}
    yield made
    for key in made.values():
        key_store.destroy(key.key_id)


@pytest.fixture()
def store(hsm_config):
    """A key store (and pool) of its own, so that the counts below are this test's."""
    s = HsmKeyStore(hsm_config)
    yield s
    s.close()


def _sign_verify(key, data: bytes) -> None:
    pub = key.public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        pub.verify(key.sign(data, ec.ECDSA(hashes.SHA256())), data, ec.ECDSA(hashes.SHA256()))
    else:
        pub.verify(key.sign(data, padding.PKCS1v15(), hashes.SHA256()), data,
                   padding.PKCS1v15(), hashes.SHA256())


def _local(pool: SessionPool):
    return getattr(pool._local, "ps", None)


def test_per_thread_key_is_the_same_key(store, keys):
    base = store.load(keys["rsa"].key_id)
    key = per_thread(base)
    assert key is not base and key.per_thread and not base.per_thread
    assert key.key_id == base.key_id and key.public_key() == base.public_key()
    assert per_thread(key) is key
    assert per_thread("not an HSM key") == "not an HSM key"
    for k in (key, per_thread(store.load(keys["ec"].key_id))):
        _sign_verify(k, b"per-thread session")


def test_each_thread_keeps_its_own_session(store, keys):
    key = per_thread(store.load(keys["ec"].key_id))
    pool = store.pool
    seen: dict[int, list] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(n: int) -> None:
        try:
            start.wait(timeout=10)
            for i in range(25):
                _sign_verify(key, f"thread {n} doc {i}".encode())
                seen.setdefault(n, []).append(_local(pool))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    sessions = {n: {id(ps) for ps in v} for n, v in seen.items()}
    assert all(len(s) == 1 for s in sessions.values()), "a thread changed sessions"
    assert len({next(iter(s)) for s in sessions.values()}) == 4, "two threads shared a session"
    assert len(pool._thread_sessions) == 4
    assert pool._idle.qsize() <= 1  # the shared pool was not used to sign (load only)


def test_stale_session_is_dropped_after_a_reset(store, keys):
    key = per_thread(store.load(keys["rsa"].key_id))
    pool = store.pool
    _sign_verify(key, b"before")
    old = _local(pool)
    pool.reset()
    _sign_verify(key, b"after a reset")
    assert _local(pool) is not old and old.closed
    assert old not in pool._thread_sessions


def test_stale_session_is_dropped_after_the_module_is_reinitialised(store, keys, hsm_config):
    """Another pool of the process re-initialises the module (C_Finalize + C_Initialize): every
    session handle of the process is void; the per-thread session must not be used again."""
    key = per_thread(store.load(keys["ec"].key_id))
    pool = store.pool
    _sign_verify(key, b"before")
    old = _local(pool)
    gen = library.generation(hsm_config.module)
    other = SessionPool(hsm_config)
    other.reset(reinitialize=True)
    with other.session():  # logs in again, re-initialising the module first
        pass
    assert library.generation(hsm_config.module) == gen + 1
    for i in range(3):
        _sign_verify(key, f"after re-initialisation {i}".encode())
    assert _local(pool) is not old and old.closed
    assert _local(pool).generation == gen + 1
    # The pools that did not re-initialise log in again too (shared keys of the session).
    _sign_verify(store.load(keys["rsa"].key_id), b"pooled after re-initialisation")
    other.close()


def test_reset_after_a_fatal_error_reinitialises_and_signing_comes_back(store, keys,
                                                                        hsm_config):
    key = per_thread(store.load(keys["rsa"].key_id))
    pool = store.pool
    _sign_verify(key, b"before")
    gen = library.generation(hsm_config.module)
    pool.reset(reinitialize=True)  # what a FATAL PKCS#11 error does
    _sign_verify(key, b"after")
    assert library.generation(hsm_config.module) == gen + 1
    assert _local(pool).generation == gen + 1


def test_beyond_the_limit_threads_share_the_pool(store, keys):
    key = per_thread(store.load(keys["ec"].key_id))
    pool = store.pool
    pool.max_thread_sessions = 1
    _sign_verify(key, b"main thread takes the only per-thread session")
    errors: list[BaseException] = []
    locals_: list = []

    def worker() -> None:
        try:
            for i in range(5):
                _sign_verify(key, f"shared {i}".encode())
            locals_.append(_local(pool))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join(timeout=30)
    assert not errors, errors
    assert locals_ == [None]  # it signed in pooled sessions
    assert len(pool._thread_sessions) == 1


def test_sessions_of_ended_threads_are_reclaimed(store, keys):
    key = per_thread(store.load(keys["ec"].key_id))
    pool = store.pool
    pool.max_thread_sessions = 2
    for n in range(5):  # five short-lived threads in turn, never more than 2 sessions
        t = threading.Thread(target=_sign_verify, args=(key, f"short-lived {n}".encode()))
        t.start()
        t.join(timeout=30)
        assert len(pool._thread_sessions) <= 2
    ended = list(pool._thread_sessions)
    pool.reset()
    assert all(ps.closed for ps in ended)


def test_forked_child_signs_with_a_session_of_its_own(store, keys):
    key = per_thread(store.load(keys["rsa"].key_id))
    _sign_verify(key, b"parent before fork")
    parent_session = _local(store.pool)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            sig = key.sign(b"child", padding.PKCS1v15(), hashes.SHA256())
            fresh = _local(store.pool) is not parent_session
            os.write(write_end, (b"1" if fresh else b"0") + sig)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        out = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert out[:1] == b"1", "the child used the parent's session"
    key.public_key().verify(out[1:], b"child", padding.PKCS1v15(), hashes.SHA256())
    _sign_verify(key, b"parent after fork")
    assert _local(store.pool) is parent_session  # the parent's session is still good
