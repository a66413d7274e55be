"""Every item of ``sheaf paper``: name -> where its function lives and what it reproduces.

An item is ``def NAME(ctx: PaperContext) -> dict`` (see :mod:`.common`); ``target`` is
``"module:function"`` with the module relative to this package, imported only when the item runs.

>>> all(name == item.name and ":" in item.target for name, item in ITEMS.items())
True
>>> try:
...     resolve("fig9")
... except SheafError as e:
...     print(e.codes)
['E660']
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..errors import Diagnostic, SheafError


@dataclass(frozen=True)
class Item:
    """One figure or table: ``target`` = ``"module:function"`` (module under :mod:`sheafdsl.paper`);
    ``seed`` is the seed the paper fixes (0 where it fixes none)."""

    name: str
    target: str
    title: str
    seed: int = 0


#: name -> item, in the paper's order within each helper's block; one line per item
ITEMS: dict[str, Item] = {item.name: item for item in [
    Item("fig1", "heat:fig1", title="Fig 1: the heat equation on a [2,4,1] net converges to the forward pass"),
    Item("E1", "heat:E1", title="Fig E.1: convergence dashboard of a [2,6,4,4,1] sigmoid-output net"),
    Item("E2", "heat:E2", title="Fig E.2: heat-equation trajectories of [2,4,1], [2,6,4,1], [2,6,4,4,1] nets"),
    Item("fig4", "spectral:fig4", title="Fig 4: Fiedler and λ_max eigenvector energy per layer block, and per-edge "
         "discord, of trained [2,30,1] and [2,12,8,6,1] nets", seed=42),
    Item("E5", "spectral:E5", title="Fig E.5: λ_min, λ_max and κ of L_free over 100k steps of training [2,30,1] "
         "(snapshots at 1k, 20k, 100k)", seed=42),
    Item("E6", "spectral:E6", title="Fig E.6: per-edge discord residuals at 1k, 20k and 100k steps, sheaf against SGD",
         seed=42),
    Item("tableE2", "spectral:tableE2", title="Table E.2: pinned discord profiles of the trained [2,30,1], sheaf "
         "against SGD", seed=42),
    Item("lab12", "lab12:lab12", title="Lab 12 (the book): Algorithm 12.4 against SGD, the slowdown beside "
         "1/λ_min(L_free), β ~ 1/n_train, the batch-parallel fast phase"),
    Item("fig2", "training:fig2", "Fig 2: the joint flow against SGD on the paraboloid and the circle", seed=42),
    Item("fig3", "training:fig3", "Fig 3: β scaling of the joint flow (final test MSE against β·n_train)", seed=42),
    Item("tableE1", "training:tableE1", "Table E.1: eight configurations, joint flow against SGD", seed=42),
    Item("E3", "training:E3", "Fig E.3: the output panels of Table E.1's configurations", seed=42),
    Item("E4", "training:E4", "Fig E.4: depth × integration time of the joint flow", seed=42),
]}


def unknown_item(name: str) -> SheafError:
    """E660: ``name`` is no item; the hint names the closest ones."""
    import difflib

    close = difflib.get_close_matches(name, list(ITEMS), n=3, cutoff=0.5)
    hint = (f"did you mean {', '.join(close)}? " if close else "") + \
        "`sheaf paper --list` lists every item; `sheaf paper all` runs them all"
    return SheafError(Diagnostic("E660", f"unknown paper item `{name}`", hint=hint, file="<command line>"))


def resolve(name: str):
    """The function of item ``name`` (its module imported now); an unknown name is E660."""
    if name not in ITEMS:
        raise unknown_item(name)
    module, func = ITEMS[name].target.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), func)
