"""Every diagnostic code sheafdsl emits, and what it means: the one registry.

A code is a letter (``E`` error, ``W`` warning) and three digits; its range names the layer that
emits it:

======  ===============================================================
range   layer
======  ===============================================================
E1xx    the parser (syntax and file errors; it stops at the first)
E2xx    the checker (names, shapes, pins, weights; all reported at once)
W3xx    the checker's warnings
E5xx    numerics and command-line input (E500–E529 lowering/solvers/infer, E530–E549 compile/spectrum/linking)
E6xx    training (E600–E629 data, config, trainers; E630–E649 run directories; E650–E659 verify; E680–E689 snapshots)
E7xx    distributed runs on Dask workers (E700–E719); learned models' checks (E730–E739)
======  ===============================================================

Adding a code is one entry here plus one row in the table of docs/language.md;
``tests/test_codes.py`` fails when a code is emitted anywhere in the source but not registered, or
registered but not documented.

>>> CODES["E202"]
'unknown stalk'
>>> sorted(codes_between("E630", "E635"))
['E630', 'E631', 'E632', 'E633', 'E634', 'E635']
"""

from __future__ import annotations

CODES: dict[str, str] = {
    # the parser
    "E100": "unexpected character",
    "E101": "unexpected token (a syntax error), including an unknown edge kind",
    "E102": "unexpected end of file",
    "E103": "not a text file: invalid UTF-8, a NUL byte, or too large",
    "E104": "empty file",
    "E105": "brackets nested too deeply",
    "E106": "number out of range (a float that overflows, an integer that is too large)",
    "E107": "the file cannot be read",
    "E108": "the file cannot be written (`sheaf fmt -w`)",
    # the checker (and the IR builders, which validate the same way)
    "E200": "missing, misplaced or repeated `sheaf NAME` header",
    "E201": "a name declared twice",
    "E202": "unknown stalk",
    "E203": "unknown parameter",
    "E210": "a dimension or width below 1",
    "E211": "a dimension or parameter too large",
    "E220": "weight matrix shape does not fit the edge's stalks",
    "E221": "bias shape does not fit the edge's target stalk",
    "E222": "a weight must be a matrix and a bias a vector",
    "E223": "a nonlinearity edge (relu, identity, tanh, ..., softmax) needs stalks of equal dimension",
    "E224": "a restriction map literal is not a rectangular matrix or a scalar",
    "E225": "restriction map sizes do not fit their stalks or each other",
    "E226": "a nonlinearity's argument is out of range (the `leaky_relu` slope must lie in (0, 1))",
    "E227": "a multiclass output map (softmax) on 1-dimensional stalks: constant, it carries no information",
    "E230": "parameter literal does not match the declared shape",
    "E231": "a literal matrix is not rectangular",
    "E232": "a value is NaN or infinite",
    "E233": "unknown or malformed initialiser",
    "E234": "he/xavier initialisers need a matrix parameter",
    "E235": "initialiser file does not exist",
    "E236": "a parameter file's entry is missing, unreadable or of the wrong shape (when parameters are loaded)",
    "E240": "a pin value has the wrong length or shape",
    "E241": "a pin index is out of range",
    "E242": "a coordinate is pinned twice",
    "E243": "input/target pins take a whole stalk",
    "E250": "a weight is not a positive finite number",
    "E260": "a parameter listed twice for reluctance",
    "E261": "tied parameters have different shapes",
    "E262": "a parameter tied to itself",
    "E263": "a pair of parameters tied twice",
    "E270": "more than one `network` statement",
    "E271": "unsupported activation or output in `network`",
    "E280": "unknown `train` option",
    "E281": "a `train` option (or statement) given twice",
    "E282": "a `train` option has a value of the wrong type",
    "E283": "a `train` option is out of range (e.g. `n=0`, `lr=-1`, `momentum=1`)",
    # learned models (docs/admm.md "Learning"): encoders, grids, decoders, blocks
    "E284": "an encoder that does not fit: unknown, widths against its observation (DIN) and agent (DOUT = 2·dim), an unknown activation, an activation after the affine output",
    "E285": "the observation of an encoded objective is not pinned to the input, or an edge touches it",
    "E286": "an edge or decoder block [a:b] that is empty or out of range, on a kind other than maps/identity, or a parameter map on a block outside a consensus problem",
    "E287": "a decoder that does not fit: its output not pinned to the target, sources of different dimensions, several sources without `mean`, W or b of the wrong shape; or a learned model without a decoder",
    "E288": "`right`/`down` on an edge that is not between one grid's agents, a grid used as a plain stalk, a grid edge of another kind than maps/identity, an empty grid",
    "E289": "a learned model outside what its trainers differentiate: a simplex or l1 term on an agent, an edge offset, a pin on an agent, a constant joined by a soft edge or to another constant",
    "E290": "an edge from a stalk to itself",
    # objectives and hard constraints (consensus problems, `objective` and `... hard`)
    "E291": "an unknown objective kind",
    "E292": "an objective's data has the wrong shape for its stalk",
    "E293": "a quadratic objective's Q is not symmetric",
    "E294": "a quadratic objective's literal Q is not positive semidefinite (the message gives a witness)",
    "E295": "a box objective with LO > HI in some coordinate",
    "E296": "an l1 objective with a negative or non-finite weight",
    "E297": "a nonlinear edge (relu, tanh, ...) in a consensus problem: a hard edge, or any edge beside objectives, must be linear",
    "E298": "an edge both `hard` and weighted",
    "E299": "constraints that contradict each other, decided up front (bounds of one stalk, a pin outside its box/nonneg/simplex, pins off a hard edge, simplex pins not summing to 1)",
    "W300": "a parameter that nothing uses",
    "W301": "a stalk with no edges, no pins and no objective",
    "W310": "an objective on a stalk whose every coordinate is hard-pinned (the term is constant)",
    "W311": "an encoder that no objective or grid uses",
    # numerics: lowering and solvers
    "E500": "unknown or unusable array backend (lowering.backend)",
    "E501": "a state-dependent map (relu, sigmoid, softmax) on the head side of an edge",
    "E502": "no value for a parameter that a restriction map or bias uses",
    "E503": "a nonlinear edge whose free head is not a leaf (a non-convex least-squares energy)",
    "E504": "L_free is singular: relative H⁰(G, U; F) ≠ 0; the message names the free directions",
    "E505": "a boundary value for a stalk that is not a stalk, or not pinned to data here",
    "E506": "no boundary value for a stalk pinned to data",
    "E507": "a boundary value (or x0) of the wrong shape, or batch sizes that disagree",
    "E508": "a boundary value holding NaN or infinite entries",
    "E509": "unknown solver method, or a non-positive rtol",
    "E510": "too many free coordinates for the dense exact solver (use cg)",
    "E511": "an unknown nonlinearity (not in sheafdsl.nonlinearities), or a missing or superfluous argument",
    "E512": "a harmonic extension that overflows float64 (infinite or NaN values): weights or inputs too large",
    "E513": "a solver that does not solve consensus problems (diffusion, cg), or a consensus solver given a state-dependent map, lowered operators or training pins",
    "E514": "a consensus problem that is infeasible up front: an empty box, a pin outside its stalk's bounds or simplex, a simplex that cannot sum to 1, a non-PSD Q parameter",
    "E515": "ADMM found the problem infeasible: the primal residual stalls above its tolerance (the message names the worst hard edge or stalk)",
    "E516": "ADMM found the problem unbounded, or diverged: the iterates run away or become infinite (the message names the stalk)",
    "E517": "the exact consensus solver was given non-quadratic objectives (box, nonneg, simplex, l1): use admm",
    "E518": "the exact consensus solver's KKT system: a minimiser that is not unique (a flat direction on ker δ_hard) or hard constraints that cannot hold",
    "E519": "a bad ADMM option (rho, alpha, rtol, atol, maxiter, warm start) or a per-instance parameter of the wrong shape",
    # inference input (the CLI's --input/--pin/--params and the API's infer)
    "E520": "an --input/--pin value that is not numbers (or holds NaN/inf)",
    "E521": "--input of the wrong length, naming unknown stalks, or missing",
    "E522": "an --input file that is missing, unreadable or of an unsupported type",
    "E523": "a malformed --pin (unknown stalk, bad index, wrong number of values)",
    "E524": "a --params file (or parameter dict) that is missing, unreadable, or does not fit the model",
    "E525": "--rtol not positive or --maxiter below 1",
    "E526": "a Python API argument that is not one of its choices, of the wrong type, or out of range",
    "E527": "a command-line value out of its range that click does not check (a negative --seed)",
    # compile and spectrum
    "E530": "sheaf compile: the output file cannot be written",
    "E531": "sheaf spectrum: --input for a model with no input pins",
    "E532": "sheaf spectrum: the sparse eigensolver failed",
    "E533": "sheaf spectrum: a --target that is unreadable, of the wrong shape, or for a model with no target pins",
    "E534": "sheaf spectrum: L_free overflows float64 (weights too large for its eigenvalues)",
    # resources
    "E540": "the work would need more memory than is available (checked before allocating; the message says how much)",
    "E541": "sheaf spectrum: the requested samples would take longer than the time budget (said before any work)",
    "E542": "sheaf linking: a --curves file that is missing, unreadable, not an .npz, or lacks the arrays `a` and `b`; a --plot that cannot be written",
    "E543": "sheaf linking: a curve that is not an (n, 3) array of finite numbers with n >= 3",
    "E544": "sheaf linking: an unknown --link name",
    "E545": "sheaf linking: `torus:K` without an integer K, or with |K| too large",
    "E546": "sheaf linking: --points out of range, or too few for the built-in link",
    "E547": "sheaf linking: --classes data that is not two classes of points in R^3, or nothing to push through",
    "E548": "sheaf linking: the model has no single input stalk of dimension 3",
    "E549": "sheaf linking: an image at a stalk that overflows float64",
    # learned consensus models (docs/admm.md "Learning"): lowering, solvers, trainers
    "E550": "a learned model given to the plain consensus solvers (it is trained, and applied with its decoder)",
    "E551": "not a learned model where one is needed, or a learned model's structure its lowering refuses (an agent without an objective, an edge to a non-agent, a nonlinear map)",
    "E552": "a learned model's restriction-map parameter of the wrong shape for its edges",
    "E553": "a learned model's data that does not fit: a missing observation, grid or target, or one of the wrong shape",
    "E554": "a learned model's prox or KKT system is numerically singular",
    "E555": "Sheaf-ADMM of a learned model diverged (non-finite stalks)",
    "E556": "a step of a learned model's trainer diverged (a non-finite loss or gradient)",
    "E557": "an edge with a parameter map on a block of a stalk given to the batched operators (cg, diffusion, the network trainers), which do not lower blocks",
    # the learned tasks (issue 11): Sudoku, digits on canvases, their baselines
    "E570": "a Sudoku task request that cannot be met: an unknown grid order, blanks out of range, or too few distinct puzzles",
    "E571": "a digits-canvas request that cannot be met: a canvas smaller than a digit, or a CNN input size not a multiple of 4 or smaller than the canvas",
    "E572": "a task baseline (MPNN, CNN) diverged: its loss became NaN or infinite",
    # training: data, config, trainers
    "E600": "unknown data set",
    "E601": "a data file that is missing, unreadable or malformed",
    "E602": "the model's input/target stalks do not fit the data",
    "E603": "the data's task (regression, binary, multiclass) differs from the model's output edge",
    "E604": "the sheaf trainer's fast phase refused before step 1: its equilibrium cannot be resolved in float64 (a lower bound of κ(L_free) beyond 1e15), or one step would take longer than the limit; the message says what it would cost",
    "E605": "a data set too small for the requested n / n_test",
    "E610": "an unknown or invalid training option (trainer, optimiser, config value)",
    "E611": "a saved trainer state that does not fit the trainer (another trainer, missing or misshapen parameters)",
    "E590": "sheaf train: a consensus problem (objectives, hard edges) is solved with `sheaf infer --solver admm`, not trained",
    "E591": "sheaf spectrum / sheaf diagnose: a consensus problem has no network-sheaf energy to analyse (use `sheaf verify` and `sheaf infer --solver admm`)",
    "E612": "the trainer needs a feed-forward network sheaf",
    "E620": "a trainer step diverged (a non-finite value); the run loop reports it as E640",
    "E621": "a linear system of the model (a trainer step, a solve) is numerically singular (e.g. a very deep or narrow network)",
    # training: run directories, checkpoints, resume, diagnose, faults
    "E630": "the run directory is a file, is not writable, already holds a run (without --resume), or holds other files",
    "E631": "--resume without --out, or a run directory that does not exist or has no checkpoint",
    "E632": "a checkpoint that is damaged, of another format, or not a sheafdsl checkpoint",
    "E633": "--resume with a model whose text differs from the run's model.sheaf",
    "E634": "--resume with a flag that changes the trajectory, a changed data file, or --baseline the run lacked",
    "E635": "sheaf diagnose: a target that is neither a run directory nor a model file",
    "E636": "sheaf diagnose: the run's model.sheaf no longer matches the model its checkpoint recorded",
    "E640": "training diverged (NaN or infinity): the message names the step and the edge",
    "E641": "a file of the run (checkpoint, metrics, summary, plot) or diagnose's plot cannot be written; nothing half-written is left and the last checkpoint is kept",
    # the joint trainer's options
    "E670": "a training option the chosen trainer does not follow: --lr or --optimizer other than sgd with the joint trainer (its weights move by forward Euler with step dt), or --stalk-init/--stalk-reinit with a trainer other than joint, or an lr_schedule other than constant with a network sheaf's trainer",
    # verify
    "E650": "verify: a parameter holding NaN or infinite values",
    "E651": "verify: a free dimension too large for the dense checks",
    "E652": "verify: the requested --samples would take longer than the time budget (said before any work)",
    # sheaf paper (E660–E669)
    "E660": "sheaf paper: an unknown item (`sheaf paper --list` lists them)",
    "E661": "sheaf paper: an output file or folder cannot be written (the folder is a file, not writable, or the disk is full)",
    "E662": "a heat-equation option that does not fit: a fixed step, the change rule, a trajectory or named initial stalks with a solver other than diffusion, a non-positive step or tolerance, an unknown stalk to record, an unknown initial-stalks name or a bad seed",
    "E663": "the heat-equation trace file (`sheaf infer --trace FILE`) cannot be written, or its extension is neither .json nor .npz",
    # snapshots and the spectral/discord items of `sheaf paper` (E680–E689)
    "E680": "--snapshot-at (snapshot_at=): not whole steps >= 0, or a step past the run's last step",
    "E681": "a snapshot file that is damaged or not a snapshot, or a snapshot asked for at a step that was not taken",
    # distributed: Dask workers (sheafdsl.distributed)
    "E700": "--workers or --scheduler without Dask installed (the [distributed] extra)",
    "E701": "a cluster asked for with both or neither of a worker count and a scheduler, or a worker count below 1",
    "E702": "the Dask scheduler cannot be reached, or has no workers (or local worker processes did not start)",
    "E703": "this command, solver or option cannot run sharded over workers (the message says what can)",
    "E704": "every worker died, or a shard could not be rebuilt after repeated worker deaths",
    "E705": "the joint flow's stalk restarts (joint_reinit) with a sharded run",
    # learned consensus models (E730–E739)
    "E730": "a `nobias` encoder with a hidden activation whose value at 0 is not 0 (sigmoid, softplus)",
    "E731": "a learned model's bounded equilibrium (nonneg/box agents) that did not settle: no active set met the KKT conditions within the iteration limit",
    "E732": "a learned model with bounds (nonneg/box agents) or constants given to a trainer other than `implicit`, which does not differentiate them",
}


def codes_between(lo: str, hi: str) -> dict[str, str]:
    """The registered codes ``lo <= code <= hi`` (same letter), with their meanings: one layer's share."""
    return {c: m for c, m in CODES.items() if c[0] == lo[0] and lo <= c <= hi}


def meaning(code: str) -> str:
    """What ``code`` means; a KeyError for an unregistered code (a bug in the emitter)."""
    return CODES[code]


__all__ = ["CODES", "codes_between", "meaning"]
