"""sheafdsl: a declarative language and toolchain for cellular sheaves.

Text -> AST -> checked model -> IR (networkx) -> operators (numpy | cupy) -> solvers -> trainer.

The Python API (docs/api.md) is imported on first use, so ``import sheafdsl`` (and ``sheaf check``)
stays cheap:

>>> import sheafdsl as sd
>>> sd.loads("sheaf t\\nnetwork mlp : 2 -> 3 -> 1\\n").stalks
{'x': 2, 'z1': 3, 'a1': 3, 'z2': 1, 'y': 1}
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it (imported when the name is first used)
_LAZY = {
    "load": "api", "loads": "api", "train": "api", "load_snapshots": "api", "open_run": "api", "diagnose_run": "api",
    "Sheaf": "api", "Inference": "api", "Fit": "api", "DiagnoseReport": "api",
    "SheafError": "errors", "Diagnostic": "errors", "Span": "errors",
    "TrainConfig": "training.config",
    "TRAINING": "ir", "INFERENCE": "ir",
    "CODES": "codes",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sheafdsl' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
