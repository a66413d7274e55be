"""Running ``sheaf paper`` items: each writes its figures and ``OUT/NAME.json``.

``OUT/NAME.json`` (written atomically after the item returns) is
``{"item": NAME, "quick": bool, "seconds": wall time, "numbers": the item's dict, "files": [paths]}``,
with the figures' paths in ``files`` and NaN/inf written as null.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..fileio import json_ready
from .common import PaperContext, prepare_out, write_file
from .registry import ITEMS, resolve, unknown_item

#: the default output folder of item NAME: ``paper_out/NAME``
DEFAULT_ROOT = Path("paper_out")


def run_item(name: str, out=None, *, quick: bool = False, seed: int | None = None, logger=None) -> dict:
    """Run item ``name`` into ``out`` (default ``paper_out/NAME``) and return the record written to
    ``OUT/NAME.json``. ``seed`` None: the item's own (the paper's, or 0). Unknown name: E660; an output
    that cannot be written: E661."""
    func = resolve(name)
    out = prepare_out(DEFAULT_ROOT / name if out is None else Path(out))
    ctx = PaperContext(out=out, quick=quick, seed=ITEMS[name].seed if seed is None else int(seed), logger=logger)
    t0 = time.perf_counter()
    numbers = func(ctx)
    seconds = time.perf_counter() - t0
    record = {"item": name, "quick": bool(quick), "seconds": seconds, "numbers": json_ready(numbers),
              "files": list(ctx.files)}
    path = out / f"{name}.json"
    write_file(path, (json.dumps(record, indent=1, allow_nan=False) + "\n").encode("utf-8"))
    record["files"] = record["files"] + [str(path)]
    return record


def check_names(names) -> list[str]:
    """The names, each an item (E660 for the first that is not)."""
    for n in names:
        if n not in ITEMS:
            raise unknown_item(n)
    return list(names)
