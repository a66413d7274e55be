"""Memory checks before large allocations: say what a request would need, and stop, instead of a raw
MemoryError (or the kernel's OOM killer) half-way through.

:func:`require_memory` compares an estimate with :func:`available_memory` (``MemAvailable`` from
``/proc/meminfo``, else physical memory; ``SHEAF_MEMORY_LIMIT`` in bytes overrides both) and raises
E540 when the estimate is larger than :data:`FRACTION` of it.
"""

from __future__ import annotations

import os

from .errors import Diagnostic, SheafError

#: the share of the available memory one command may plan to use
FRACTION = 0.8

DIAGNOSTICS = {
    "E540": "the work would need more memory than is available (checked before allocating); the message "
            "says how much",
}


def available_memory() -> int:
    """Bytes the process may still allocate (an estimate)."""
    env = os.environ.get("SHEAF_MEMORY_LIMIT")
    if env:
        try:
            return int(float(env))
        except ValueError:
            pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def require_memory(nbytes: float, what: str, *, hint: str | None = None, file: str = "<input>") -> None:
    """Raise E540 unless ``nbytes`` (an estimate for ``what``) fits in the available memory."""
    from .fileio import format_size

    have = available_memory()
    if nbytes > FRACTION * have:
        raise SheafError(Diagnostic("E540", f"{what} would need about {format_size(nbytes)} of memory; "
                                            f"{format_size(have)} is available", hint=hint, file=file))


__all__ = ["DIAGNOSTICS", "FRACTION", "available_memory", "require_memory"]
