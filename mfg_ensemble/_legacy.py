"""The module paths of mfg_ensemble 0.1 (one flat folder), kept importable.

``import mfg_ensemble.store`` or ``from mfg_ensemble.report import make_report`` still work:
each old path is the very module object of its new home (no copy, no warning), so scripts
written against 0.1 run unchanged. New code imports from the layers or from the package's
flat face (``import mfg_ensemble as mfg``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

MOVED = {
    "_backend": "kernels.backend",
    "_validate": "kernels.checks",
    "weno": "kernels.reference.weno",
    "hjb": "kernels.reference.hjb",
    "fv": "kernels.reference.fv",
    "particles": "kernels.reference.particles",
    "kde": "kernels.reference.kde",
    "rng": "kernels.reference.rng",
    "sweep_steps": "kernels.reference.substeps",
    "problem": "game.problem",
    "solver": "game.solver",
    "fixed_point": "game.fixed_point",
    "sweep": "ensemble.sweep",
    "store": "ensemble.store",
    "runner": "ensemble.runner",
    "cluster": "ensemble.cluster",
    "accessor": "analysis.accessor",
    "report": "analysis.report",
}
"""Old submodule name → its home in the layered package."""
PACKAGE = "mfg_ensemble"


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``mfg_ensemble.<old>`` and loads it as the module at its new path."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        package, _, old = fullname.partition(".")
        if package != PACKAGE or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        return importlib.import_module(f"{PACKAGE}.{MOVED[spec.name.partition('.')[2]]}")

    def exec_module(self, module: ModuleType) -> None:
        """The module is already executed at its new path."""


def install() -> None:
    """Register the finder once per process."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())


def module(old: str) -> ModuleType:
    """The module at the old path ``mfg_ensemble.<old>`` (for attribute access on the package)."""
    return importlib.import_module(f"{PACKAGE}.{old}")
