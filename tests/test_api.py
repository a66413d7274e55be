"""The public Python API (docs/api.md): the contract of issue 9, run exactly as written, and the
API's validation (the checker's and the commands' codes, never a raw numpy error)."""

from pathlib import Path

import numpy as np
import pytest

import sheafdsl as sd
from sheafdsl.errors import SheafError

MODELS = Path(__file__).resolve().parents[1] / "models"
NET = "sheaf t\nnetwork mlp : 2 -> 4 -> 1\n"


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(MODELS.parent)


def test_the_contract_as_written(in_repo):
    X = np.random.default_rng(0).uniform(-1, 1, size=(7, 2))
    sh = sd.load("models/paraboloid.sheaf")        # and sd.loads(text)
    p = sh.init_params(seed=0)                      # dict name -> array
    r = sh.infer({"x": X}, params=p)                # r.stalks["y"] has shape (B, 1); solver=... optional
    rep = sd.load("models/tiny.sheaf").verify()     # rep.claims: objects with .name, .status, .detail
    fit = sd.train(sh, steps=50, seed=0)            # fit.params (dict), fit.history (list of dicts), fit.metrics (dict: test_mse, ...)

    assert isinstance(p, dict) and all(isinstance(v, np.ndarray) for v in p.values())
    assert set(p) == set(sh.param_shapes) and all(p[k].shape == s for k, s in sh.param_shapes.items())
    assert r.stalks["y"].shape == (7, 1)
    # the harmonic extension with the input pinned is the forward pass (independent reference)
    a1 = np.maximum(X @ p["W1"].T + p["b1"], 0)
    np.testing.assert_allclose(r.stalks["y"], a1 @ p["W2"].T + p["b2"], rtol=1e-10, atol=1e-12)
    assert r.converged.all() and r.consistent.all()
    assert [c.name for c in rep.claims] and all(c.status in ("proved", "checked", "failed", "skipped") and c.detail
                                                for c in rep.claims)
    assert isinstance(fit.params, dict) and set(fit.params) == set(p)
    assert isinstance(fit.history, list) and all(isinstance(h, dict) for h in fit.history)
    assert [h["step"] for h in fit.history][0] == 0 and fit.history[-1]["step"] == 50
    assert isinstance(fit.metrics, dict) and np.isfinite(fit.metrics["test_mse"]) and fit.metrics["steps"] == 50
    assert not all(np.array_equal(fit.params[k], p[k]) for k in p)  # it trained


def test_loads_equals_load(in_repo):
    text = Path("models/paraboloid.sheaf").read_text()
    a, b = sd.load("models/paraboloid.sheaf"), sd.loads(text)
    assert a.stalks == b.stalks and a.param_shapes == b.param_shapes
    for k in a.init_params(3):
        np.testing.assert_array_equal(a.init_params(3)[k], b.init_params(3)[k])


def test_train_is_the_cli_run(tmp_path, in_repo):
    """sd.train and `sheaf train` are one code path: same final parameters from the same seed."""
    from click.testing import CliRunner

    from sheafdsl.cli.main import cli

    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "models/paraboloid.sheaf", "--steps", "20", "--seed", "1", "--out",
                                   str(out), "--no-baseline", "--no-plots", "--json"])
    assert res.exit_code == 0, res.output
    fit = sd.train(sd.load("models/paraboloid.sheaf"), steps=20, seed=1)
    with np.load(out / "checkpoint.npz") as ck:
        for k, v in fit.params.items():
            np.testing.assert_array_equal(ck[k], v)
    sh, params, saved = sd.open_run(out)
    assert saved.step == 20 and all(np.array_equal(params[k], fit.params[k]) for k in params)


def test_train_with_a_run_directory_and_resume(tmp_path, in_repo):
    sh = sd.load("models/paraboloid.sheaf")
    whole = sd.train(sh, steps=30, seed=2)
    first = sd.train(sh, steps=10, seed=2, out=tmp_path / "r")
    assert first.out == tmp_path / "r" and (tmp_path / "r" / "checkpoint.npz").is_file()
    rest = sd.train(sh, steps=30, seed=2, out=tmp_path / "r", resume=True)
    for k in whole.params:  # exact resume
        np.testing.assert_array_equal(rest.params[k], whole.params[k])
    with pytest.raises(SheafError) as e:
        sd.train(sh, steps=30, seed=3, out=tmp_path / "r", resume=True)
    assert e.value.codes == ["E634"]


def test_spectrum_cohomology_compile_diagnose(in_repo):
    import networkx as nx

    sh = sd.load("models/paraboloid.sheaf")
    s = sh.spectrum(samples=5)
    w = s.worst["training"]
    assert len(s.samples) == 5 and 0 < w["lambda_min"] <= w["lambda_max"] and not w["singular"]
    X = np.array([[0.1, 0.2], [-0.3, 0.4]])
    assert sh.spectrum(inputs={"x": X}).mode == "inputs"
    c = sh.cohomology()
    assert c.relative_h0 == 0
    assert sd.load("models/twisted.sheaf").cohomology(boundary="inference").h0 is not None
    G = sh.compile()
    assert isinstance(G, nx.MultiDiGraph) and set(sh.stalks) <= set(G.nodes)
    d = sh.diagnose()
    assert d.edges and abs(sum(e.share for e in d.edges) - 1) < 1e-9 and d.n > 0


@pytest.mark.parametrize("call, code", [
    (lambda sh: sh.infer({"x": [[1.0, 2.0, 3.0]]}), "E521"),
    (lambda sh: sh.infer({"q": [1.0, 2.0]}), "E521"),
    (lambda sh: sh.infer({"x": [[np.nan, 0.0]]}), "E520"),
    (lambda sh: sh.infer({"x": [["a", "b"]]}), "E520"),
    (lambda sh: sh.infer(), "E521"),
    (lambda sh: sh.infer([0.0, 0.0], solver="newton"), "E509"),
    (lambda sh: sh.infer([0.0, 0.0], rtol=-1), "E525"),
    (lambda sh: sh.infer([0.0, 0.0], params={"W1": np.zeros((4, 2))}), "E524"),
    (lambda sh: sh.infer([0.0, 0.0], params={**sh.init_params(), "W1": np.zeros((2, 4))}), "E524"),
    (lambda sh: sh.infer([0.0, 0.0], params={**sh.init_params(), "W9": np.zeros(1)}), "E524"),
    (lambda sh: sh.infer([0.0, 0.0], pins={"y": [1.0, 2.0]}), "E523"),
    (lambda sh: sh.infer([0.0, 0.0], pins={"z1": ([7], [0.0])}), "E523"),
    (lambda sh: sh.infer([0.0, 0.0], pins={"nope": [0.0]}), "E523"),
    (lambda sh: sh.init_params(seed=-1), "E526"),
    (lambda sh: sh.verify(boundary="both"), "E526"),
    (lambda sh: sh.spectrum(samples=0), "E526"),
    (lambda sh: sh.cohomology(method="magic"), "E526"),
    (lambda sh: sh.diagnose(split="validation"), "E526"),
    (lambda sh: sd.train(sh, steps=-1), "E610"),
    (lambda sh: sd.train(sh, lerning_rate=0.1), "E610"),
    (lambda sh: sd.train(42), "E526"),
])
def test_bad_input_is_a_sheaf_error_with_a_code(call, code):
    sh = sd.loads(NET)
    with pytest.raises(SheafError) as e:
        call(sh)
    assert e.value.codes[0] == code, e.value.codes


def test_infer_pins_two_sided():
    sh = sd.loads(NET)
    r = sh.infer([0.5, -1.0], pins={"y": [0.3]})
    assert r.stalks["y"].shape == (1, 1) and r.stalks["y"][0, 0] == pytest.approx(0.3)
    assert not r.batch and "y" in r.to_json()["stalks"]


def test_bad_model_text_has_the_checker_codes():
    with pytest.raises(SheafError) as e:
        sd.loads("sheaf t\nstalk x : 2\nedge e : x -> q identity\n")
    assert "E202" in e.value.codes
    with pytest.raises(SheafError) as e:
        sd.load("no/such/file.sheaf")
    assert e.value.codes == ["E107"]


def test_library_functions_validate_parameter_values():
    """solve() on a parameter dict of the wrong shape or type: E524, not a raw numpy error."""
    from sheafdsl.solvers import solve

    sh = sd.loads(NET)
    P = sh.init_params()
    x = {"x": np.zeros((1, 2))}
    for bad in ({**P, "W1": np.zeros((2, 4))}, {**P, "b1": "abc"}, {**P, "W2": np.zeros((1, 4, 1))}):
        with pytest.raises(SheafError) as e:
            solve(sh.graph, bad, x)
        assert e.value.codes == ["E524"]
    with pytest.raises(SheafError) as e:
        solve(sh.graph, {"W1": P["W1"]}, x)
    assert e.value.codes == ["E502"]


def test_boundary_constants():
    from sheafdsl.ir import BOUNDARIES, INFERENCE, TRAINING

    assert sd.TRAINING is TRAINING == ("input", "target", "value") and sd.INFERENCE is INFERENCE == ("input", "value")
    assert BOUNDARIES == {"training": TRAINING, "inference": INFERENCE}
    rep = sd.loads(NET).verify(boundary="inference", samples=4)
    assert tuple(rep.boundary) == INFERENCE


def test_training_errors_name_the_model_file(in_repo):
    with pytest.raises(SheafError) as e:
        sd.train(sd.load("models/triangle.sheaf"), steps=3)  # no input/target pins
    assert e.value.codes == ["E602"] and e.value.diagnostics[0].file == "models/triangle.sheaf"


def test_readme_python_example_runs(in_repo):
    import re

    readme = (MODELS.parent / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "import sheafdsl" in b]
    ns: dict = {}
    exec(compile(block.replace("steps=500", "steps=5"), "README.md", "exec"), ns)
    assert ns["r"].stalks["y"].shape == (1, 1) and "test_mse" in ns["fit"].metrics and ns["report"].claims


@pytest.mark.parametrize("call", ["coboundary", "laplacian", "cohomology", "verify", "spectrum", "solve"])
def test_analysis_and_lowering_refuse_misshapen_parameters(call):
    """A parameter of the wrong shape was reshaped silently (or failed inside numpy): now E524."""
    from sheafdsl.analysis.cohomology import cohomology
    from sheafdsl.analysis.spectrum import sample_states, spectrum
    from sheafdsl.analysis.verify import verify
    from sheafdsl.lowering import coboundary_matrix, laplacian_matrix
    from sheafdsl.solvers import solve

    sh = sd.loads(NET)
    G, bad = sh.graph, {**sh.init_params(), "W1": np.zeros((2, 2))}
    f = {"coboundary": lambda: coboundary_matrix(G, bad), "laplacian": lambda: laplacian_matrix(G, bad),
         "cohomology": lambda: cohomology(G, bad), "verify": lambda: verify(G, bad),
         "spectrum": lambda: spectrum(G, bad, sample_states(G, 2, np.random.default_rng(0))),
         "solve": lambda: solve(G, bad, {"x": np.zeros((1, 2))})}[call]
    with pytest.raises(SheafError) as e:
        f()
    assert e.value.codes == ["E524"]


def test_library_seeds_and_boundary_values_are_checked():
    from sheafdsl.lowering import init_params
    from sheafdsl.solvers import solve

    sh = sd.loads(NET)
    for seed in (-1, 1.5, "0", True):
        with pytest.raises(SheafError) as e:
            init_params(sh.graph, seed)
        assert e.value.codes == ["E526"]
    with pytest.raises(SheafError) as e:
        solve(sh.graph, sh.init_params(), {"x": "ab"})
    assert e.value.codes == ["E520"]


def test_export_and_fit_infer(tmp_path):
    from sheafdsl.ir.export import load_json

    sh = sd.loads(NET)
    assert sh.export(tmp_path / "g.json") == "json"
    back = load_json(tmp_path / "g.json")
    assert sorted(back.nodes) == sorted(sh.graph.nodes)
    for bad in (tmp_path / "g.txt", tmp_path / "no" / "dir" / "g.json"):
        with pytest.raises(SheafError) as e:
            sh.export(bad)
        assert e.value.codes == ["E530"]
    fit = sd.train(sh, steps=5, seed=0, threads=1)
    X = np.array([[0.1, 0.2], [0.3, -0.4]])
    np.testing.assert_array_equal(fit.infer(X).stalks["y"], sh.infer(X, params=fit.params).stalks["y"])
    with pytest.raises(SheafError) as e:
        sd.train(sh, steps=1, threads=0)
    assert e.value.codes == ["E526"]
