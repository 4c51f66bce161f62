"""The test suite's own layout: test modules share fixtures through conftest.py and helpers through plain
modules (tests/helpers.py, tiny_models.py, ...), never by importing each other."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_test_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ("." * node.level) + (node.module or "")
            names = [base] + [f"{base}.{alias.name}".replace("..", ".") for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.rsplit(".", 1)[-1].startswith("test_"))
    return found


def test_no_test_module_imports_another():
    wrong = {path.name: sorted(found) for path in sorted(TESTS.glob("test_*.py")) if (found := _imported_test_modules(path))}
    assert not wrong, f"move what they share into conftest.py fixtures or a helper module: {wrong}"


def test_the_check_sees_every_spelling_of_such_an_import(tmp_path):
    for line in ("from tests.test_app import app_url", "import tests.test_sae", "from tests import test_cache",
                 "from .test_sae import NoStep", "from . import test_sae"):
        (tmp_path / "test_x.py").write_text(line + "\n")
        assert _imported_test_modules(tmp_path / "test_x.py"), line
    (tmp_path / "test_x.py").write_text("from tests.helpers import run\nfrom tests import tiny_models\n")
    assert not _imported_test_modules(tmp_path / "test_x.py")
