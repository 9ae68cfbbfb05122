"""Joining Ray quietly: which raylet messages still reach the console."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from actors.runtime import _drop_benign_raylet_warnings  # noqa: E402

pytestmark = pytest.mark.integration


def _raylet(line: str) -> dict:
    return {"lines": [line], "pid": "raylet", "is_err": False}


def test_benign_raylet_warnings_are_dropped_and_errors_kept(capsys):
    _drop_benign_raylet_warnings()
    _drop_benign_raylet_warnings()  # twice is once
    printer = ray._private.worker.print_to_stdstream
    printer(_raylet("WARNING: 8 PYTHON worker processes have been started on node: x"), False)
    printer(_raylet("A worker died or was killed while executing a task"), False)
    shown = capsys.readouterr()
    assert "worker processes have been started" not in shown.out + shown.err
    assert "A worker died" in shown.out + shown.err
