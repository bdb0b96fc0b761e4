"""The instance's Flask secret key: made once, the same for every process that starts with it.

gunicorn's workers all load the app at once, so on an instance's first start they race to make
the key (seen in session 9: a worker died with FileExistsError and gunicorn refused to boot)."""
from __future__ import annotations

import multiprocessing as mp
import os
import stat
from pathlib import Path

import pytest

from ca.errors import ConfigurationError
from ra_portal.settings import Settings


def _settings(path: Path) -> Settings:
    return Settings(instance=path.parent, database_url="sqlite://", base_url="http://x",
                    secret_key_file=path, listen="127.0.0.1:0",
                    profiles_file=path.parent / "profiles.json")


def _ask(path: str, barrier, out) -> None:
    barrier.wait()
    try:
        out.put(("ok", _settings(Path(path)).secret_key()))
    except BaseException as exc:  # reported to the parent, which fails the test
        out.put(("error", repr(exc)))


def test_workers_starting_together_get_one_key(tmp_path):
    ctx = mp.get_context("fork")
    for round_ in range(15):
        path = tmp_path / f"instance-{round_}" / "secret-key"
        n = 6
        barrier, out = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_ask, args=(str(path), barrier, out)) for _ in range(n)]
        for p in procs:
            p.start()
        answers = [out.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        assert all(kind == "ok" for kind, _ in answers), answers
        keys = {key for _, key in answers}
        assert len(keys) == 1 and len(keys.pop()) == 64
        assert path.read_text().strip() == answers[0][1]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert os.listdir(path.parent) == ["secret-key"]  # no temporary file left behind


def test_key_is_kept_and_an_empty_file_is_refused(tmp_path):
    path = tmp_path / "secret-key"
    first = _settings(path).secret_key()
    assert _settings(path).secret_key() == first
    path.write_text("")
    with pytest.raises(ConfigurationError, match="empty"):
        _settings(path).secret_key()
