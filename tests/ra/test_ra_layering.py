"""ca/ra is domain logic: it imports neither Flask nor PKCS#11, HSM, CRL or the portal."""
from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = ("flask", "flask_login", "flask_wtf", "werkzeug", "pkcs11", "hsm", "crl",
             "ra_portal")


def test_ca_ra_imports_no_framework():
    root = Path(__file__).resolve().parents[2] / "ca" / "ra"
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        assert ast.get_docstring(tree), f"{path.name} needs a one-line docstring"
        assert len(path.read_text("utf-8").splitlines()) < 420, path.name
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
