"""A per-process pool of PKCS#11 sessions on one token, safe for threads and forked workers.

Login state in PKCS#11 belongs to the application, not the session: one "anchor" session logs in
and stays open; pooled sessions are opened without a PIN and inherit the login (closing them does
not log the process out). After fork() the pool notices the new pid and starts afresh.

When the HSM fails (token removed, network HSM unreachable, module error) every use raises
`HsmUnavailable` with a `retry_after` hint, and the pool heals itself without a restart: it drops
its sessions, re-initialises the module (C_Finalize + C_Initialize, see hsm.library), logs in
again, and while the HSM stays down it tries at most once per `retry_interval` seconds, answering
the others at once. docs/faults.md describes what each PKCS#11 error means here.
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
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


def _unavailable(message: str) -> HsmUnavailable:
    return HsmUnavailable(message, retry_after=RETRY_AFTER)


class PooledSession:
    """A python-pkcs11 session plus a cache of key objects found in it."""

    def __init__(self, session: pkcs11.Session) -> None:
        self.session = session
        self.keys: dict[tuple[bytes, object], object] = {}

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
        self._reset_state()

    def _reset_state(self) -> None:
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
                               f"{self.config.module}") from None
        except UNAVAILABLE as exc:
            self._needs_reinit = True
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise _unavailable(f"the PKCS#11 module {self.config.module} cannot be used "
                               f"({detail})") from None
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
            raise _unavailable(f"cannot log in to the token: {type(exc).__name__}") from None
        self._token, self._anchor = token, anchor
        return token

    def reset(self, reinitialize: bool = False) -> None:
        """Forget every session (after a fatal error); the next use logs in again, after
        re-initialising the module when `reinitialize` (the token or module failed)."""
        with self._lock:
            old_idle, anchor, same_process = self._idle, self._anchor, self._pid == os.getpid()
            generation = self._generation
            self._reset_state()
            if reinitialize and same_process:
                self._needs_reinit = True
                self._generation = generation  # the generation whose sessions failed
        if not same_process:
            return
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
