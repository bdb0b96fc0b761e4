"""Imports point one way (ARCHITECTURE.md): ra_portal -> crl -> ca; only composition roots
import hsm. Checked by parsing every module, including imports inside functions."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ca", "crl", "hsm", "ra_portal", "migrations")


def _modules() -> list[Path]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    return sorted(files + [ROOT / "wsgi.py"])


def imports_of(path: Path) -> set[str]:
    """Top-level package names and full dotted names imported anywhere in the module."""
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the module's package
                parts = path.relative_to(ROOT).with_suffix("").parts[:-node.level]
                base = ".".join(parts + ((node.module,) if node.module else ()))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def _hits(names: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names for f in forbidden if n == f or n.startswith(f + "."))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# Modules allowed to import hsm: the composition root, the command line, scheduler entry
# points. ra_portal/settings.py and ra_portal/instance.py read HsmConfig (plain data, no
# PKCS#11) to know where the token and its PIN file are.
def hsm_allowed(path: str, names: set[str]) -> bool:
    if path == "ra_portal/wiring.py" or path.startswith("ra_portal/cli/"):
        return True
    if path.startswith("ra_portal/") and "scheduler" in path:
        return True
    if path in ("ra_portal/settings.py", "ra_portal/instance.py"):
        return set(_hits(names, ("hsm",))) <= {"hsm.config", "hsm.config.HsmConfig",
                                               "hsm.config.find_softhsm"}
    return path.startswith("hsm/")


def test_the_checker_sees_imports(tmp_path):
    sample = ROOT / "ca" / "csr.py"
    names = imports_of(sample)
    assert "cryptography.x509" in names and "ca.errors.BadCSR" in names


def problems_for(where: str, names: set[str]) -> list[str]:
    problems: list[str] = []
    if where.startswith("ca/"):
        problems += _hits(names, ("flask", "flask_sqlalchemy", "flask_login", "flask_wtf",
                                  "pkcs11", "hsm", "crl", "ra_portal"))
    if where.startswith("crl/"):
        problems += _hits(names, ("ra_portal", "hsm", "pkcs11"))
    if where.startswith("hsm/"):
        problems += _hits(names, ("flask", "crl", "ra_portal"))
    if _hits(names, ("hsm",)) and not hsm_allowed(where, names):
        problems += _hits(names, ("hsm",))
    if _hits(names, ("pkcs11",)) and not where.startswith("hsm/"):
        problems += _hits(names, ("pkcs11",))
    return sorted(set(problems))


def test_the_rules_catch_violations(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from flask import g\n    import pkcs11\n"
                   "from hsm.store import HsmKeyStore\n")
    names = imports_of(bad)
    assert problems_for("ca/x.py", names) == ["flask", "flask.g", "hsm.store",
                                              "hsm.store.HsmKeyStore", "pkcs11"]
    assert problems_for("crl/x.py", names) == ["hsm.store", "hsm.store.HsmKeyStore", "pkcs11"]
    assert problems_for("ra_portal/web/x.py", names) == ["hsm.store", "hsm.store.HsmKeyStore",
                                                         "pkcs11"]
    assert problems_for("ra_portal/settings.py", names) != []
    assert problems_for("ra_portal/cli/x.py", {"hsm.store"}) == []
    assert problems_for("ra_portal/settings.py", {"hsm.config", "hsm.config.HsmConfig"}) == []


@pytest.mark.parametrize("path", _modules(), ids=rel)
def test_import_direction(path):
    where = rel(path)
    problems = problems_for(where, imports_of(path))
    assert not problems, f"{where} imports {problems}"
