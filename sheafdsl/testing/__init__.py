"""hypothesis strategies for property-testing sheaves (needs the ``test`` extra: ``pip install sheafdsl[test]``).

- :mod:`.sheaves`: IR-level strategies: ``networks``, ``widths``, ``weights``, ``activation_patterns``,
  ``restriction_maps``, ``sheaves`` (general sheaves with rational constant maps), ``pin_sets`` and the helper
  ``with_pins``, ``consensus_problems`` (consensus problems, feasible by construction).
- :mod:`.source`: strategies for ASTs and ``.sheaf`` source text (re-exported here when present).

See docs/testing.md for a property test written with them.
"""

from __future__ import annotations

import importlib.util

from .sheaves import (ConsensusCase, NetworkCase, activation_patterns, consensus_problems, network_source, networks,
                      pin_sets, restriction_maps, sheaves, weights, widths, with_pins)

__all__ = ["ConsensusCase", "NetworkCase", "activation_patterns", "consensus_problems", "network_source", "networks",
           "pin_sets", "restriction_maps", "sheaves", "weights", "widths", "with_pins"]

# The source-text strategies live in a sibling module written separately; re-export its public names when it is
# there. Only its absence is tolerated: an error inside it must surface, not be swallowed.
if importlib.util.find_spec(f"{__name__}.source") is not None:
    from . import source as _source

    _public = getattr(_source, "__all__", [n for n in vars(_source) if not n.startswith("_")])
    globals().update({n: getattr(_source, n) for n in _public})
    __all__ += [n for n in _public if n not in __all__]
