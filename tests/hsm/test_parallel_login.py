"""Several processes logging in to the same SoftHSM token at once (gunicorn's workers right after
they are forked): SoftHSM's file store sometimes shows a process no token, or fails its login,
while another process writes the token's files (softhsm/SoftHSMv2#757). That is not an HSM
outage, and the first request of a worker must not get a 503 for it: hsm/pool.py retries the
login, after a re-initialisation of the module, a few times within a fraction of a second."""
from __future__ import annotations

import logging
import multiprocessing
import subprocess
import time
from dataclasses import replace

import pytest

from ca.errors import HsmUnavailable
from hsm import library
from hsm import pool as pool_mod
from hsm.pool import SessionPool

CHILDREN, ROUNDS = 4, 60


def _first_login(config, conn) -> None:
    """In a freshly forked child: log in as a gunicorn worker does at its first request."""
    try:
        pool = SessionPool(config)
        with pool.session():
            pass
        conn.send(None)
    except HsmUnavailable as exc:
        conn.send(exc.message)
    except BaseException as exc:  # pragma: no cover - reported, not hidden
        conn.send(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def test_parallel_first_logins_never_fail(hsm_config):
    ctx = multiprocessing.get_context("fork")
    failures, logins = [], 0
    deadline = time.monotonic() + 90
    for _ in range(ROUNDS):
        pipes, procs = [], []
        for _ in range(CHILDREN):
            parent, child = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_first_login, args=(hsm_config, child))
            p.start()
            child.close()
            pipes.append(parent)
            procs.append(p)
        for parent, p in zip(pipes, procs):
            message = parent.recv() if parent.poll(30) else "no answer within 30 s"
            p.join(30)
            logins += 1
            if message is not None:
                failures.append(message)
        if time.monotonic() > deadline:
            break
    assert logins >= CHILDREN * 10
    assert not failures, f"{len(failures)} of {logins} parallel logins failed: {failures[:3]}"


def test_a_token_that_is_really_absent_is_still_unavailable(hsm_config, caplog):
    """The retries do not hide an outage: a label no token has still fails with the same message
    as before, after LOGIN_ATTEMPTS attempts, each after a re-initialisation, and quickly."""
    config = replace(hsm_config, token_label="no-such-token-label")
    pool = SessionPool(config)
    caplog.set_level(logging.INFO, logger="hsm.pool")
    generation = library.generation(config.module)
    t0 = time.monotonic()
    with pytest.raises(HsmUnavailable, match="no token labelled 'no-such-token-label'"):
        with pool.session():
            pass
    assert time.monotonic() - t0 < 2.0
    retries = [r for r in caplog.records if "HSM login attempt" in r.getMessage()]
    assert len(retries) == pool_mod.LOGIN_ATTEMPTS - 1
    assert library.generation(config.module) >= generation + pool_mod.LOGIN_ATTEMPTS - 1


def test_a_wrong_pin_is_tried_once(hsm_config, tmp_path, caplog):
    """A PIN the token refuses is never tried again by the retries: each try would count
    against the token's PIN retry counter."""
    label = "govca-wrong-pin"
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin",
                    "123456", "--so-pin", "12345678"], check=True, capture_output=True)
    pin_file = tmp_path / "wrong-pin"
    pin_file.write_text("654321")
    pool = SessionPool(replace(hsm_config, token_label=label, pin_file=pin_file))
    caplog.set_level(logging.INFO, logger="hsm.pool")
    with pytest.raises(HsmUnavailable, match="rejected the PIN"):
        with pool.session():
            pass
    # (A retry for "no token labelled" may come first: the module was initialised before the
    # token was made, and sees it only after a re-initialisation.)
    retried = [r.getMessage() for r in caplog.records if "HSM login attempt" in r.getMessage()]
    assert not [m for m in retried if "PIN" in m], retried
