"""sheafdsl: a declarative language and toolchain for cellular sheaves.

Text -> AST -> checked model -> IR (networkx) -> operators (numpy | cupy) -> solvers -> trainer.
"""

__version__ = "0.1.0"
