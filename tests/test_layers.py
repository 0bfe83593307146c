"""The package's layers import only downward, and every module says what it is for.

    errors, schema  →  kernels  →  game  →  ensemble  →  analysis  →  cli

(``schema`` reads the kernels' backend for provenance; ``errors`` imports nothing of ours.)
Read from the source files of the repository with ``ast``, so a lazy import inside a function
counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mfg_ensemble"
RANK = {"errors": 0, "kernels": 1, "schema": 2, "game": 3, "ensemble": 4, "analysis": 5, "cli": 6}
"""The layer of each top-level part; a module may import only parts of a lower or equal rank."""
FREE = {"__init__", "_legacy", "_rust_core"}
"""The package's face and the compiled extension stand outside the layers."""


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _part(module: str) -> str:
    """The top-level part of ``mfg_ensemble.<part>...`` (``mfg_ensemble`` itself: the face)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "mfg_ensemble":
            found |= {f"mfg_ensemble.{a.name}" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m for m in found if m == "mfg_ensemble" or m.startswith("mfg_ensemble.")}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_only_downward(path: Path) -> None:
    here = path.relative_to(PACKAGE).with_suffix("").parts[0]
    if here in FREE:
        return
    for module in _imports(path):
        there = _part(module)
        assert there not in ("__init__", "_legacy"), f"{path.name} imports the package face ({module})"
        assert there != "_rust_core" or here == "kernels", f"{path.name} calls the extension outside kernels/"
        if there in RANK:
            assert RANK[there] <= RANK[here], f"{here}/{path.name} imports {module} from the layer above"


def test_analysis_never_imports_the_game() -> None:
    for path in (PACKAGE / "analysis").rglob("*.py"):
        assert not any(_part(m) == "game" for m in _imports(path)), path


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_starts_with_a_docstring(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert doc and len(doc.split()) >= 8, f"{path} needs a docstring that says what it is for"


def test_reference_modules_mirror_the_rust_modules() -> None:
    """One concept, one stem: each NumPy reference has a Rust twin of the same name."""
    rust = {p.stem for p in (REPO / "rust_core" / "src").glob("*.rs")}
    reference = {p.stem for p in (PACKAGE / "kernels" / "reference").glob("*.py")} - {"__init__"}
    assert reference <= rust, reference - rust
