"""Loads a PKCS#11 module once per process, initialised with OS locking.

python-pkcs11 0.10 calls C_Initialize(NULL), which tells the module that the application will not
call it from several threads; SoftHSM then turns its mutexes off and two threads signing at once
crash the process. We call C_Initialize with CKF_OS_LOCKING_OK ourselves (ctypes, on the same
dlopen handle) and give python-pkcs11 a lib object that skips its own initialisation.

After fork() a child must initialise the module again (PKCS#11 v2.40 section 6.7.7); the loaded
library is therefore remembered with the pid that loaded it, and reloaded in a new process.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading

import pkcs11
from pkcs11 import _pkcs11

CKF_OS_LOCKING_OK = 0x00000002
CKR_OK = 0x0
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191


class _CInitializeArgs(ctypes.Structure):
    _fields_ = [("CreateMutex", ctypes.c_void_p), ("DestroyMutex", ctypes.c_void_p),
                ("LockMutex", ctypes.c_void_p), ("UnlockMutex", ctypes.c_void_p),
                ("flags", ctypes.c_ulong), ("pReserved", ctypes.c_void_p)]


class LockedLib(_pkcs11.lib):
    """A python-pkcs11 `lib` whose initialisation asks the module for OS locking."""

    def initialize(self):  # overrides the Cython cpdef called from lib.__init__
        handle = ctypes.CDLL(self.so)
        args = _CInitializeArgs(None, None, None, None, CKF_OS_LOCKING_OK, None)
        rv = handle.C_Initialize(ctypes.byref(args))
        if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
            raise pkcs11.PKCS11Error(f"C_Initialize(CKF_OS_LOCKING_OK) failed: rv=0x{rv:x}")


_lock = threading.Lock()
_loaded: dict[str, tuple[int, LockedLib]] = {}
_generation: dict[str, int] = {}  # bumped by each reinitialize(), per module
_idle = threading.Condition(_lock)
_active: dict[str, int] = {}  # sessions in use, per module (reinitialize waits for none)
_finalizers = 0  # reinitialize() calls waiting for _active to drop to 0
FINALIZE_WAIT = 5.0


# Every signature goes through enter()/leave() (directly, or through using()): both take only the
# module lock (a C-level lock, uncontended almost always) and wake nobody unless a
# reinitialize() is waiting -- the hot path of the OCSP responder signs thousands of times a
# second from many threads, and a Condition.notify_all per signature was the largest Python
# cost around it.
def enter(module: str) -> None:
    """Mark a session of `module` as in use: C_Finalize must not run under a signing thread.
    Call leave() after; check generation() *after* enter() to know the session is still valid
    (a re-initialisation either happened before, and the generation shows it, or waits)."""
    with _lock:
        _active[module] = _active.get(module, 0) + 1


def leave(module: str) -> None:
    with _lock:
        n = _active[module] = _active[module] - 1
        if n == 0 and _finalizers:
            _idle.notify_all()


@contextlib.contextmanager
def using(module: str):
    """enter() ... leave() around a block."""
    enter(module)
    try:
        yield
    finally:
        leave(module)


def load(module: str) -> LockedLib:
    """The module's lib object for this process (initialised after any fork)."""
    pid = os.getpid()
    with _lock:
        entry = _loaded.get(module)
        if entry and entry[0] == pid:
            return entry[1]
        # First use in this process, or a forked child: never reuse the parent's state.
        pkcs11._loaded.pop(module, None)
        lib = LockedLib(module)
        pkcs11._loaded[module] = lib
        _loaded[module] = (pid, lib)
        return lib


def forget(module: str) -> None:
    """Drop the cached lib (used when the module reports a fatal error)."""
    with _lock:
        _loaded.pop(module, None)
        pkcs11._loaded.pop(module, None)


def generation(module: str) -> int:
    """How many times this process has re-initialised the module (see `reinitialize`). A plain
    dict read (atomic in CPython): it is asked on every signature."""
    return _generation.get(module, 0)


def reinitialize(module: str, seen: int) -> int:
    """C_Finalize then C_Initialize again on the next `load`: after a token was removed, a
    network HSM dropped its connection or the module reported CKR_GENERAL_ERROR, most modules
    (SoftHSM included: it scans its token directory only in C_Initialize) recover only through
    a new initialisation. Every session of the process becomes invalid (PKCS#11 v2.40 5.4), so
    the caller must hold no session open, and every pool logs in again.

    `seen` is the generation the caller's failing sessions belong to: when another pool of the
    process has already re-initialised since, nothing is done again (no ping-pong between
    pools). Returns the current generation."""
    global _finalizers
    with _idle:
        current = _generation.get(module, 0)
        if seen != current:
            return current
        _finalizers += 1
        try:
            idle = _idle.wait_for(lambda: _active.get(module, 0) == 0, timeout=FINALIZE_WAIT)
        finally:
            _finalizers -= 1
        if not idle:
            return current  # still busy: the caller stays unavailable and tries again later
        entry = _loaded.get(module)
        if entry is not None and entry[0] == os.getpid():
            try:
                ctypes.CDLL(entry[1].so).C_Finalize(None)
            except OSError:  # pragma: no cover - the module file itself vanished
                pass
        _loaded.pop(module, None)
        pkcs11._loaded.pop(module, None)
        _generation[module] = current + 1
        return current + 1
