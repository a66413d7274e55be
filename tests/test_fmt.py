"""The formatter and `sheaf fmt`: layout, comments, numbers, --check / --expand / -w / --json."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

from sheafdsl.cli.main import cli
from sheafdsl.frontend import ast as A
from sheafdsl.frontend import parse_text
from sheafdsl.frontend.formatter import collect_comments, format_module, format_number, format_source


def fmt(src: str) -> str:
    out = format_source(src)
    assert format_source(out) == out, "not idempotent"
    assert parse_text(out) == parse_text(src), "changed the meaning"
    return out


def test_layout_aligns_blocks():
    src = """sheaf   demo
param W1:30x2 init he
param bias_one : 30 init zeros
stalk x:2
stalk z1 : 30
edge aff1:x->z1 affine W1 bias_one weight 2.0
edge e : z1 -> x maps [[1.0,0],[0,1]]|1
pin x=input
pin z1[0,1] ~ [0.5, 1e-05] weight 10
reluctance W1   bias_one weight 1e-3
tie W1 ~ W1 weight .5
network m : 2->3 -> 1 relu output softmax
train data=paraboloid   n=300 lr=0.01 out="a b.csv"
"""
    assert fmt(src) == """sheaf demo
param W1       : 30 x 2  init he
param bias_one : 30      init zeros
stalk x  : 2
stalk z1 : 30
edge aff1 : x  -> z1  affine W1 bias_one weight 2
edge e    : z1 -> x   maps [[1, 0], [0, 1]] | 1
pin x        = input
pin z1[0, 1] ~ [0.5, 1e-5] weight 10
reluctance W1 bias_one weight 0.001
tie W1 ~ W1 weight 0.5
network m : 2 -> 3 -> 1 relu output softmax
train data=paraboloid n=300 lr=0.01 out="a b.csv"
"""


def test_blank_lines_are_kept_collapsed_and_split_blocks():
    src = "sheaf t\n\n\n\nstalk x : 1\nstalk long : 1\n\nstalk y : 1\n\n\n"
    assert fmt(src) == "sheaf t\n\nstalk x    : 1\nstalk long : 1\n\nstalk y : 1\n"


def test_comments_are_kept_in_place():
    src = """# header line 1
# header line 2

sheaf t   # the name

# about the stalks
stalk x : 2   # first
stalk long : 3 # second
param W : 2 x 2 = [[1, 2],  # inside a multi-line statement
                   [3, 4]]  # at its end
# trailing comment 1

# trailing comment 2
"""
    out = fmt(src)
    assert out == """# header line 1
# header line 2

sheaf t  # the name

# about the stalks
stalk x    : 2  # first
stalk long : 3  # second
# inside a multi-line statement
param W : 2 x 2  = [[1, 2],
                    [3, 4]]  # at its end
# trailing comment 1

# trailing comment 2
"""
    assert [c.text for c in collect_comments(out)] == [c.text for c in collect_comments(src)]


def test_hash_inside_a_string_is_not_a_comment():
    src = 'sheaf t\nparam W : 2 init "a#b.npz":W  # real\n'
    assert [c.text for c in collect_comments(src)] == ["# real"]
    assert fmt(src) == 'sheaf t\nparam W : 2  init "a#b.npz":W  # real\n'


def test_matrix_literals_one_row_per_line():
    src = "sheaf t\nparam W : 3 x 2 = [[1, 2], [3, 4], [5, 6]]\nparam V : 1 x 2 = [[1, 2]]\n"
    assert fmt(src) == ("sheaf t\nparam W : 3 x 2  = [[1, 2],\n                    [3, 4],\n"
                        "                    [5, 6]]\nparam V : 1 x 2  = [[1, 2]]\n")


@pytest.mark.parametrize("x, text", [
    (1.0, "1"), (-0.5, "-0.5"), (0.001, "0.001"), (1e-5, "1e-5"), (2.5e300, "2.5e300"), (1e16, "1e16"),
    (123456789.0, "123456789"), (float("inf"), "inf"), (float("-inf"), "-inf"), (float("nan"), "nan"),
    (0.1 + 0.2, "0.30000000000000004"), (5e-324, "5e-324"),
])
def test_numbers(x, text):
    assert format_number(x) == text
    if x == x:
        assert float(text) == x


def test_format_of_an_ast_without_source_groups_by_kind():
    m = A.Module((A.Header(A.Ident("t")), A.StalkDecl(A.Ident("x"), 2), A.StalkDecl(A.Ident("yy"), 3),
                  A.PinDecl(A.Ident("x"), "input")))
    assert format_module(m) == "sheaf t\n\nstalk x  : 2\nstalk yy : 3\n\npin x = input\n"


def test_expand_prints_the_sugar_expansion():
    out = format_source("sheaf t\nnetwork m : 2 -> 3 -> 1 output sigmoid\nreluctance W1 weight 0.1\n", expand=True)
    assert "network" not in out
    assert "edge out  : z2 -> y   sigmoid" in out and "param W1 : 3 x 2  init he" in out
    assert out.endswith("pin x = input\npin y = target\nreluctance W1 weight 0.1\n")
    assert format_source(out) == out
    # the network's end-of-line comment goes above the expansion, not onto its first stalk
    out = format_source("sheaf t\nnetwork m : 2 -> 1  # the net\n", expand=True)
    assert out.startswith("sheaf t\n# the net\nstalk x  : 2\n")


# ----------------------------------------------------------------------------------------------
# the command


@pytest.fixture()
def runner():
    return CliRunner()


def _write(tmp_path, text: str, name: str = "m.sheaf"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


MESSY = "sheaf t\nstalk x:2 # c\npin x=input\n"
CLEAN = "sheaf t\nstalk x : 2  # c\npin x = input\n"


def test_fmt_prints(runner, tmp_path):
    r = runner.invoke(cli, ["fmt", _write(tmp_path, MESSY)])
    assert r.exit_code == 0 and r.output == CLEAN


def test_fmt_check(runner, tmp_path):
    r = runner.invoke(cli, ["fmt", "--check", _write(tmp_path, MESSY)])
    assert r.exit_code == 1 and "not in canonical layout" in r.output
    r = runner.invoke(cli, ["fmt", "--check", _write(tmp_path, CLEAN, "c.sheaf")])
    assert r.exit_code == 0


def test_fmt_write_is_atomic_and_keeps_the_mode(runner, tmp_path):
    path = _write(tmp_path, MESSY)
    os.chmod(path, 0o640)
    r = runner.invoke(cli, ["fmt", "-w", path])
    assert r.exit_code == 0
    assert open(path, encoding="utf-8").read() == CLEAN
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["m.sheaf"]  # no temporary file left behind
    before = os.stat(path).st_mtime_ns
    assert runner.invoke(cli, ["fmt", "--write", path]).exit_code == 0
    assert os.stat(path).st_mtime_ns == before  # unchanged files are not rewritten


def test_fmt_write_failure_leaves_the_file_alone(tmp_path, monkeypatch):
    from sheafdsl.cli import fmt as fmt_cmd
    from sheafdsl.errors import SheafError

    path = _write(tmp_path, MESSY)

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(SheafError) as info:
        fmt_cmd.write_atomic(path, CLEAN)
    assert info.value.codes == ["E108"]
    assert open(path, encoding="utf-8").read() == MESSY
    assert sorted(os.listdir(tmp_path)) == ["m.sheaf"]


def test_fmt_expand(runner, tmp_path):
    r = runner.invoke(cli, ["fmt", "--expand", _write(tmp_path, "sheaf t\nnetwork m : 2 -> 1\n")])
    assert r.exit_code == 0 and "edge aff1 : x  -> z1  affine W1 b1" in r.output and "network" not in r.output


def test_fmt_json(runner, tmp_path):
    r = runner.invoke(cli, ["fmt", "--json", _write(tmp_path, MESSY)])
    out = json.loads(r.output)
    assert r.exit_code == 0 and out["ok"] and not out["canonical"] and out["text"] == CLEAN
    r = runner.invoke(cli, ["fmt", "--json", "--check", _write(tmp_path, MESSY)])
    assert r.exit_code == 1 and json.loads(r.output)["ok"] is False


@pytest.mark.parametrize("args", [["--check", "-w"], ["--check", "--expand"], ["--bogus"], []])
def test_fmt_usage_errors_exit_2(runner, tmp_path, args):
    r = runner.invoke(cli, ["fmt", *args] + ([_write(tmp_path, CLEAN)] if args else []))
    assert r.exit_code == 2


def test_fmt_of_a_bad_file_exits_1_with_the_diagnostic(runner, tmp_path):
    r = runner.invoke(cli, ["fmt", _write(tmp_path, "sheaf t\nstalk x : \n")])
    assert r.exit_code == 1 and "m.sheaf:2:11: error[E101]" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli, ["fmt", "--json", str(tmp_path / "missing.sheaf")])
    assert r.exit_code == 1 and json.loads(r.output)["diagnostics"][0]["code"] == "E107"


def test_fmt_expand_of_an_invalid_network_exits_1(runner, tmp_path):
    r = runner.invoke(cli, ["fmt", "--expand", _write(tmp_path, "sheaf t\nnetwork m : 2 -> 3 -> 1 output tanh\n")])
    assert r.exit_code == 1 and "error[E271]" in r.output
    # an error elsewhere does not stop --expand (it helps to see the generated names)
    r = runner.invoke(cli, ["fmt", "--expand", _write(tmp_path, "sheaf t\nnetwork m : 2 -> 1\npin z3 = 0\n")])
    assert r.exit_code == 0 and "stalk z1 : 1" in r.output


def test_crlf_and_tabs_become_canonical(runner, tmp_path):
    p = tmp_path / "w.sheaf"
    p.write_bytes(b"sheaf t\r\n\tstalk x : 2\t# c\r\npin x = input\r\n")
    assert runner.invoke(cli, ["fmt", "--check", str(p)]).exit_code == 1
    assert runner.invoke(cli, ["fmt", "-w", str(p)]).exit_code == 0
    assert p.read_bytes() == b"sheaf t\nstalk x : 2  # c\npin x = input\n"
    assert runner.invoke(cli, ["fmt", "--check", str(p)]).exit_code == 0
