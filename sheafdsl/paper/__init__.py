"""Reproducing Bosca & Ghrist's figures and tables, one command each (``sheaf paper NAME``; docs/paper.md).

The top layer, after training and analysis: an item may use the API, the trainers, the analysis and
the solvers; nothing but ``sheafdsl/cli/paper.py`` imports this package.

- :mod:`.registry`: ``ITEMS``, one :class:`~.registry.Item` per figure or table (its function is
  imported only when it runs, so ``sheaf paper fig1`` does not import the other items' modules);
- :mod:`.common`: :class:`~.common.PaperContext` (output folder, ``quick``, ``seed``, ``log``,
  ``save_figure``), the figure writer and small shared helpers;
- :mod:`.runner`: :func:`~.runner.run_item` runs one item and writes ``OUT/NAME.json``.
"""
