"""What the CLI tests check of an in-process ``CliRunner`` result (shared by the test modules that import it)."""

from __future__ import annotations

import json


def no_traceback(res):
    """The command ended by itself or by a SystemExit (an exit code), and printed no traceback."""
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output


def json_line(res) -> dict:
    """The one non-empty line of ``--json`` output, parsed."""
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stdout
    return json.loads(lines[0])
