"""Who holds a lease (the scheduler's leadership, a reorganisation plan's worker): a process
named "host:pid:random". A lease whose holder is a process of this machine that no longer
exists can be taken over at once instead of after its expiry (a crash or a restart of
`make run` / `govca serve` would otherwise leave CRLs and OCSP answers unrefreshed, or a plan
unworked, until the dead holder's lease ran out)."""
from __future__ import annotations

import os
import socket
import uuid


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_dead(owner: str | None) -> bool:
    """True when `owner` is empty, or names a process of this machine (other than this one)
    that no longer exists. A holder on another host, or one that cannot be read, is alive for
    all we know."""
    if not owner:
        return True
    try:
        host, pid, _ = owner.split(":", 2)
        pid_n = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname() or pid_n == os.getpid():
        return False
    try:
        os.kill(pid_n, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
