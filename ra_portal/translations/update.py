"""Maintainers' tool: extract the page messages and merge them into the English catalog, then
compile every catalog (.po -> .mo). Run: .venv/bin/python -m ra_portal.translations.update"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def compile_all(only_missing: bool = False) -> list[Path]:
    """Compile each catalog; written to a temporary file and renamed, so that a worker never
    reads half a file."""
    out = []
    for po in sorted(HERE.glob("*/LC_MESSAGES/messages.po")):
        mo = po.with_suffix(".mo")
        if only_missing and mo.exists():
            continue
        with po.open("rb") as fh:
            catalog = read_po(fh)
        fd, tmp = tempfile.mkstemp(dir=mo.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            write_mo(fh, catalog, use_fuzzy=False)
        os.replace(tmp, mo)
        out.append(mo)
    return out


def main() -> None:
    pot = HERE / "messages.pot"
    pybabel = [sys.executable, "-m", "babel.messages.frontend"]
    subprocess.run([*pybabel, "extract", "-F", str(HERE / "babel.cfg"), "-k", "_l",
                    "--no-location", "--sort-output", "-o", str(pot), "."], cwd=ROOT,
                   check=True)
    subprocess.run([*pybabel, "update", "-i", str(pot), "-d", str(HERE), "-l", "en",
                    "--no-fuzzy-matching"], cwd=ROOT, check=True)
    for mo in compile_all():
        print(f"compiled {mo.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
