"""ca/tokens stays pure: no Flask, PKCS#11, hsm, crl or ra_portal imports; modules stay small."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("flask", "pkcs11", "hsm", "crl", "ra_portal")
OWNED = [*sorted((ROOT / "ca" / "tokens").glob("*.py")), ROOT / "ca/store/models_tokens.py",
         ROOT / "hsm/token_ops.py", ROOT / "hsm/escrow.py", ROOT / "ra_portal/cli/tokens.py"]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_token_modules_import_no_adapters():
    for path in [*sorted((ROOT / "ca" / "tokens").glob("*.py")),
                 ROOT / "ca/store/models_tokens.py"]:
        bad = _imports(path) & set(FORBIDDEN)
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_modules_are_small_and_documented():
    for path in OWNED:
        text = path.read_text("utf-8")
        assert len(text.splitlines()) < 400, path
        assert ast.get_docstring(ast.parse(text)), path
