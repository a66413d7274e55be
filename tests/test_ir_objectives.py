"""The IR contract of consensus problems: objectives on stalks (add_objective) and hard edges."""
import numpy as np, pytest
from sheafdsl.ir import new_sheaf, add_stalk, add_objective, objectives, add_edge, Identity, is_consensus, InvalidSheaf, add_param
def G2():
    G = new_sheaf("t"); add_stalk(G, "x", 2); add_stalk(G, "y", 2); return G
def test_ok():
    G = G2(); assert not is_consensus(G)
    o = add_objective(G, "x", "box", lo=0, hi=[1, 2]); assert o.lo.tolist() == [0, 0] and o.hi.tolist() == [1, 2]
    add_objective(G, "x", "l1", lam=0.5); add_objective(G, "y", "simplex")
    assert [o.kind for o in objectives(G, "x")] == ["box", "l1"] and is_consensus(G)
    add_edge(G, "e", "x", "y", src_map=Identity(), dst_map=Identity(), hard=True)
    assert G.edges["x", "y", "e"]["hard"]
@pytest.mark.parametrize("kw,code", [
    (dict(stalk="z", kind="nonneg"), "E202"), (dict(kind="cube"), "E291"),
    (dict(kind="quadratic", Q=[[1, 2], [0, 1]]), "E293"), (dict(kind="quadratic", Q=[[1]]), "E292"),
    (dict(kind="box", lo=[2, 0], hi=1), "E295"), (dict(kind="l1", lam=-1), "E296"),
    (dict(kind="nonneg", lam=1), "E292"), (dict(kind="quadratic", Q="P"), "E203"),
    (dict(kind="quadratic", Q=[[1, 0], [0, float("nan")]]), "E232"),
    (dict(kind="quadratic", Q=[[1, 2], [2, 1]]), "E294")])
def test_bad(kw, code):
    G = G2(); kw.setdefault("stalk", "x")
    with pytest.raises(InvalidSheaf) as e:
        add_objective(G, kw.pop("stalk"), kw.pop("kind"), **kw)
    assert e.value.diagnostics[0].code == code
def test_param():
    G = G2(); add_param(G, "P", (2, 2), "zeros"); assert add_objective(G, "x", "quadratic", Q="P").Q == "P"


def test_psd_witness_is_a_direction_of_negative_curvature():
    G = G2()
    with pytest.raises(InvalidSheaf) as e:
        add_objective(G, "x", "quadratic", Q=[[1, 2], [2, 1]])
    msg = e.value.diagnostics[0].message
    v = np.array(eval(msg.split("v = ")[1].split(" has")[0]))
    assert v @ np.array([[1, 2], [2, 1]]) @ v < 0
