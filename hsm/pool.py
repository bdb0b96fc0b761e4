"""A per-process pool of PKCS#11 sessions on one token, safe for threads and forked workers.

Login state in PKCS#11 belongs to the application, not the session: one "anchor" session logs in
and stays open; pooled sessions are opened without a PIN and inherit the login (closing them does
not log the process out). After fork() the pool notices the new pid and starts afresh.

When the HSM fails (token removed, network HSM unreachable, module error) every use raises
`HsmUnavailable` with a `retry_after` hint, and the pool heals itself without a restart: it drops
its sessions, re-initialises the module (C_Finalize + C_Initialize, see hsm.library), logs in
again, and while the HSM stays down it tries at most once per `retry_interval` seconds, answering
the others at once. docs/faults.md describes what each PKCS#11 error means here.

Per-thread sessions (`sign()` with `per_thread=True`, used by the OCSP responder's key): a thread
that signs many times keeps a session of its own instead of checking one out of the pool each
time (no semaphore, queue or condition variable per signature). They are bounded
(`GOVCA_HSM_THREAD_SESSIONS`, default 64 per process; beyond it the shared pool is used) and
follow the same fault rules: a session from before a reset, a re-initialisation of the module or
a fork is never used again -- its thread drops it (and closes it when its handle is still
valid) at its next signature.
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import threading
import time
import weakref
from collections.abc import Iterator

import pkcs11
from pkcs11 import exceptions as p11e

from ca.errors import HsmUnavailable
from hsm import library
from hsm.config import HsmConfig, HsmConfigError

log = logging.getLogger(__name__)

# Errors after which the session (or the whole login) cannot be trusted any more. Handles that
# turn invalid under us mean the token's objects were unloaded: SoftHSM answers so when its token
# directory disappears, a network HSM after a fail-over.
FATAL = (p11e.DeviceRemoved, p11e.DeviceError, p11e.TokenNotPresent, p11e.TokenNotRecognised,
         p11e.SessionHandleInvalid, p11e.SessionClosed, p11e.UserNotLoggedIn,
         p11e.GeneralError, p11e.DeviceMemory, p11e.HostMemory, p11e.FunctionFailed,
         p11e.ObjectHandleInvalid, p11e.KeyHandleInvalid)
UNAVAILABLE = FATAL + (p11e.NoSuchToken, p11e.PKCS11Error)
RETRY_AFTER = 3  # seconds a client is told to wait (HTTP Retry-After) while the HSM is down
# A login that fails because the module could not see the token or its login failed is tried
# again at once, after a re-initialisation, up to LOGIN_ATTEMPTS times in all and for at most
# LOGIN_RETRY_WINDOW seconds, before the HSM is reported unavailable: SoftHSM's file store
# sometimes shows no token, or fails a login with CKR_GENERAL_ERROR, to a process while other
# processes log in to the same token (gunicorn's workers at their first requests;
# softhsm/SoftHSMv2#757, tests/hsm/test_parallel_login.py). A wrong or locked PIN is never
# tried again.
LOGIN_ATTEMPTS = 4
LOGIN_RETRY_DELAY = (0.005, 0.03)  # seconds, random, times the attempt number
LOGIN_RETRY_WINDOW = 0.5  # no new attempt after this (a re-initialisation may wait for sessions)


class _ModuleFailed(HsmUnavailable):
    """A login that failed in the module (no token seen, CKR_GENERAL_ERROR, ...), not a refusal
    by the token (wrong or locked PIN): worth another attempt (LOGIN_ATTEMPTS)."""


def _unavailable(message: str, kind: type[HsmUnavailable] = HsmUnavailable) -> HsmUnavailable:
    return kind(message, retry_after=RETRY_AFTER)


class PooledSession:
    """A python-pkcs11 session plus a cache of key objects found in it."""

    __slots__ = ("session", "keys", "epoch", "generation", "pid", "thread", "closed")

    def __init__(self, session: pkcs11.Session) -> None:
        self.session = session
        self.keys: dict[tuple[bytes, object], object] = {}
        # Only for per-thread sessions: what they belong to, and whether they were closed.
        self.epoch = self.generation = self.pid = 0
        self.thread = None
        self.closed = False

    def private_key(self, key_id: bytes):
        k = (key_id, pkcs11.ObjectClass.PRIVATE_KEY)
        if k not in self.keys:
            self.keys[k] = self.session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY,
                                                id=key_id)
        return self.keys[k]

    def public_key(self, key_id: bytes):
        return self.session.get_key(object_class=pkcs11.ObjectClass.PUBLIC_KEY, id=key_id)


class SessionPool:
    def __init__(self, config: HsmConfig, acquire_timeout: float = 30.0,
                 retry_interval: float | None = None) -> None:
        self.config = config
        self.acquire_timeout = acquire_timeout
        self.retry_interval = retry_interval if retry_interval is not None else float(
            os.environ.get("GOVCA_HSM_RETRY_SECONDS", "1"))
        self._lock = threading.Lock()
        self._needs_reinit = False
        self._down_until = 0.0  # while the HSM is down: no new attempt before this
        self._down_message = ""
        self._epoch = 0
        self._local = threading.local()
        self._thread_sessions: set[PooledSession] = set()
        self.max_thread_sessions = int(os.environ.get("GOVCA_HSM_THREAD_SESSIONS", "64"))
        self._reset_state()

    def _reset_state(self) -> None:
        self._epoch += 1  # every per-thread session opened before is stale from now on
        self._pid = os.getpid()
        self._idle: queue.LifoQueue[PooledSession] = queue.LifoQueue()
        self._opened = 0
        self._anchor: pkcs11.Session | None = None
        self._token: pkcs11.Token | None = None
        self._generation = library.generation(self.config.module)
        self._slots = threading.BoundedSemaphore(self.config.pool_size)

    # -- token and login ------------------------------------------------------------------
    def _ensure_login(self) -> pkcs11.Token:
        if self._pid != os.getpid():
            # Forked: the parent's sessions are not ours. Do not close them (that would log the
            # parent out); just forget them.
            self._needs_reinit = False
            self._down_until = 0.0
            self._reset_state()
        if self._token is not None and self._anchor is not None:
            if self._generation == library.generation(self.config.module):
                return self._token
            self._reset_state()  # another pool re-initialised the module: our sessions are gone
        if time.monotonic() < self._down_until:
            raise _unavailable(self._down_message)
        try:
            token = self._login()
        except HsmUnavailable as exc:
            self._down_until = time.monotonic() + self.retry_interval
            self._down_message = exc.message
            raise
        if self._needs_reinit:
            log.warning("HSM available again: token %r logged in", self.config.token_label)
        self._needs_reinit, self._down_until = False, 0.0
        return token

    def _login(self) -> pkcs11.Token:
        """_login_once(), tried again (after a re-initialisation of the module) when the module
        failed rather than the token refused; see LOGIN_ATTEMPTS."""
        attempt, give_up = 1, time.monotonic() + LOGIN_RETRY_WINDOW
        while True:
            try:
                return self._login_once()
            except _ModuleFailed as exc:
                if attempt >= LOGIN_ATTEMPTS or time.monotonic() >= give_up:
                    raise
                log.info("HSM login attempt %d of %d failed (%s); trying again", attempt,
                         LOGIN_ATTEMPTS, exc.message)
            time.sleep(random.uniform(*LOGIN_RETRY_DELAY) * attempt)
            attempt += 1

    def _login_once(self) -> pkcs11.Token:
        self.config.apply_environment()
        if self._needs_reinit:
            # Sessions of this pool are gone; re-initialise unless another pool just did.
            library.reinitialize(self.config.module, self._generation)
            self._generation = library.generation(self.config.module)
        try:
            lib = library.load(self.config.module)
            token = lib.get_token(token_label=self.config.token_label)
        except p11e.NoSuchToken:
            self._needs_reinit = True  # a module rescans its slots only in C_Initialize
            raise _unavailable(f"no token labelled {self.config.token_label!r} in "
                               f"{self.config.module}", _ModuleFailed) from None
        except UNAVAILABLE as exc:
            self._needs_reinit = True
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise _unavailable(f"the PKCS#11 module {self.config.module} cannot be used "
                               f"({detail})", _ModuleFailed) from None
        try:
            pin = self.config.read_pin()
        except HsmConfigError as exc:
            raise _unavailable(str(exc)) from None
        try:
            anchor = token.open(user_pin=pin)
        except p11e.UserAlreadyLoggedIn:
            anchor = token.open()
        except p11e.PinIncorrect:
            raise _unavailable("the token rejected the PIN in "
                               f"{self.config.pin_file}") from None
        except p11e.PinLocked:
            raise _unavailable("the token's user PIN is locked") from None
        except UNAVAILABLE as exc:
            self._needs_reinit = True
            raise _unavailable(f"cannot log in to the token: {type(exc).__name__}",
                               _ModuleFailed) from None
        self._token, self._anchor = token, anchor
        return token

    def reset(self, reinitialize: bool = False) -> None:
        """Forget every session (after a fatal error); the next use logs in again, after
        re-initialising the module when `reinitialize` (the token or module failed)."""
        with self._lock:
            old_idle, anchor, same_process = self._idle, self._anchor, self._pid == os.getpid()
            generation = self._generation
            self._reset_state()
            # Per-thread sessions are stale now (the epoch changed): their threads drop them at
            # their next signature; those of threads that ended are closed here.
            dead = [ps for ps in self._thread_sessions if not self._thread_alive(ps)]
            self._thread_sessions = set()
            for ps in dead:
                ps.closed = True
            if reinitialize and same_process:
                self._needs_reinit = True
                self._generation = generation  # the generation whose sessions failed
        if not same_process:
            return
        for ps in dead:
            self._close_thread_session(ps)
        while True:
            try:
                ps = old_idle.get_nowait()
            except queue.Empty:
                break
            with contextlib.suppress(Exception):
                ps.session.close()
        # The anchor is not closed: python-pkcs11's close() calls C_Logout, and login state
        # belongs to the whole process (PKCS#11 v2.40 5.6), so it would log out every other
        # session of this process too. A dead anchor is simply dropped; a live one keeps the
        # process logged in, which is what the next login would do anyway.
        del anchor

    def close(self) -> None:
        self.reset()

    def _token_present(self) -> bool:
        """Ask the module again for our token (C_GetSlotList + C_GetTokenInfo)."""
        try:
            library.load(self.config.module).get_token(token_label=self.config.token_label)
            return True
        except Exception:  # noqa: BLE001 - any failure here means "not present"
            return False

    # -- sessions ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self) -> Iterator[PooledSession]:
        with self._lock:
            token = self._ensure_login()
            slots, idle = self._slots, self._idle
        if not slots.acquire(timeout=self.acquire_timeout):
            raise _unavailable("all HSM sessions are busy; try again")
        ps: PooledSession | None = None
        try:
            try:
                ps = idle.get_nowait()
            except queue.Empty:
                try:
                    ps = PooledSession(token.open())
                except UNAVAILABLE as exc:
                    self.reset(reinitialize=True)
                    raise _unavailable(f"cannot open an HSM session: {type(exc).__name__}") from None
            try:
                with library.using(self.config.module):
                    yield ps
            except FATAL as exc:
                log.warning("PKCS#11 fatal error %s: resetting the session pool", type(exc).__name__)
                ps = None
                self.reset(reinitialize=True)
                raise _unavailable(f"the HSM failed: {type(exc).__name__}") from None
            except p11e.NoSuchKey:
                message = (f"the key is not in token {self.config.token_label!r} "
                           f"(was the token replaced or restored?)")
                if not self._token_present():
                    ps = None  # the token went away under us, not just the key
                    self.reset(reinitialize=True)
                    message = f"the token {self.config.token_label!r} is not present"
                raise _unavailable(message) from None
            except p11e.PKCS11Error as exc:
                # Any other PKCS#11 failure: the session itself is still usable.
                raise _unavailable(f"the HSM refused the operation: "
                                   f"{type(exc).__name__}") from None
        finally:
            if ps is not None and idle is self._idle:
                idle.put(ps)
            slots.release()

    # -- per-thread sessions -------------------------------------------------------------------
    def sign(self, key_id: bytes, payload: bytes, mechanism, param=None, *,
             per_thread: bool = False, buffer_size: int = 8192) -> bytes:
        """Sign `payload` with the private key `key_id` in the token. `per_thread`: in a session
        the calling thread keeps (see the module docstring), else in a pooled one; the errors
        are the same as session()'s."""
        if not per_thread or getattr(self._local, "capped", 0) == self._epoch:
            with self.session() as ps:
                return ps.private_key(key_id).sign(payload, mechanism=mechanism,
                                                   mechanism_param=param,
                                                   buffer_size=buffer_size)
        module = self.config.module
        for _attempt in range(3):
            library.enter(module)  # before the checks: no re-initialisation can start under us
            ps = getattr(self._local, "ps", None)
            if ps is not None and ps.epoch == self._epoch and not ps.closed and \
                    ps.generation == library.generation(module) and ps.pid == os.getpid():
                break
            library.leave(module)  # logging in may have to re-initialise the module
            if not self._thread_session(ps):  # as many per-thread sessions as allowed
                return self.sign(key_id, payload, mechanism, param, buffer_size=buffer_size)
        else:
            raise _unavailable("the HSM sessions keep being reset; try again")
        failure = None
        try:
            k = ps.keys.get(key_id)
            if k is None:
                k = ps.keys[key_id] = ps.session.get_key(
                    object_class=pkcs11.ObjectClass.PRIVATE_KEY, id=key_id)
            return k.sign(payload, mechanism=mechanism, mechanism_param=param,
                          buffer_size=buffer_size)
        except FATAL as exc:
            failure = exc
        except p11e.NoSuchKey:
            pass  # below, once this thread no longer holds the module
        except p11e.PKCS11Error as exc:
            # Any other PKCS#11 failure: the session itself is still usable.
            raise _unavailable(f"the HSM refused the operation: "
                               f"{type(exc).__name__}") from None
        finally:
            library.leave(module)
        if failure is not None:
            log.warning("PKCS#11 fatal error %s: resetting the session pool",
                        type(failure).__name__)
            self._drop_thread_session(ps)
            self.reset(reinitialize=True)
            raise _unavailable(f"the HSM failed: {type(failure).__name__}")
        message = (f"the key is not in token {self.config.token_label!r} "
                   f"(was the token replaced or restored?)")
        if not self._token_present():  # the token went away under us, not just the key
            self._drop_thread_session(ps)
            self.reset(reinitialize=True)
            message = f"the token {self.config.token_label!r} is not present"
        raise _unavailable(message)

    @staticmethod
    def _thread_alive(ps: PooledSession) -> bool:
        thread = ps.thread() if ps.thread is not None else None
        return thread is not None and thread.is_alive()

    def _thread_session(self, stale: PooledSession | None) -> bool:
        """Open a session for the calling thread (its old one, `stale`, is retired first);
        False when the per-thread limit is reached. Not under library.enter(): logging in may
        re-initialise the module, which waits for every session to be released."""
        if stale is not None:
            self._drop_thread_session(stale, close=True)
        with self._lock:
            token = self._ensure_login()  # HsmUnavailable while the HSM is down
            if len(self._thread_sessions) >= self.max_thread_sessions:
                for ps in [ps for ps in self._thread_sessions if not self._thread_alive(ps)]:
                    self._thread_sessions.discard(ps)  # its thread ended
                    ps.closed = True  # (its handle is left to the module: rare, and bounded)
                if len(self._thread_sessions) >= self.max_thread_sessions:
                    self._local.capped = self._epoch  # this thread shares the pool until a reset
                    return False
            epoch, generation = self._epoch, self._generation
        try:
            ps = PooledSession(token.open())
        except UNAVAILABLE as exc:
            self.reset(reinitialize=True)
            raise _unavailable(f"cannot open an HSM session: {type(exc).__name__}") from None
        ps.epoch, ps.generation, ps.pid = epoch, generation, os.getpid()
        ps.thread = weakref.ref(threading.current_thread())
        self._local.ps = ps
        with self._lock:
            if epoch == self._epoch:
                self._thread_sessions.add(ps)
                return True
        self._drop_thread_session(ps, close=True)  # a reset happened meanwhile: try again
        return True

    def _drop_thread_session(self, ps: PooledSession, close: bool = False) -> None:
        """Forget a per-thread session; `close`: also close it when its handle is still ours
        (same process, same initialisation of the module)."""
        if getattr(self._local, "ps", None) is ps:
            self._local.ps = None
        with self._lock:
            self._thread_sessions.discard(ps)
            if ps.closed:
                return
            ps.closed = True
        if close:
            self._close_thread_session(ps)

    def _close_thread_session(self, ps: PooledSession) -> None:
        module = self.config.module
        library.enter(module)
        try:
            if ps.pid == os.getpid() and ps.generation == library.generation(module):
                with contextlib.suppress(Exception):
                    ps.session.close()
        finally:
            library.leave(module)

    @contextlib.contextmanager
    def rw_session(self) -> Iterator[pkcs11.Session]:
        """A read-write session, for key generation only; not pooled."""
        with self._lock:
            token = self._ensure_login()
        try:
            session = token.open(rw=True)
        except UNAVAILABLE as exc:
            self.reset(reinitialize=True)
            raise _unavailable(f"cannot open a read-write HSM session: "
                               f"{type(exc).__name__}") from None
        try:
            with library.using(self.config.module):
                yield session
        except FATAL as exc:
            self.reset(reinitialize=True)
            raise _unavailable(f"the HSM failed: {type(exc).__name__}") from None
        except p11e.PKCS11Error as exc:
            raise _unavailable(f"the HSM refused the key operation: "
                               f"{type(exc).__name__}") from None
        finally:
            with contextlib.suppress(Exception):
                session.close()
