"""Joining Ray: which raylet messages still reach the console, what a local Ray is set up with."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


_START_LOCAL = """
import json, os
from actors.runtime import LOCAL_TRAIN_SETTINGS, init_ray
from selfevo.config import load_config
started = init_ray(load_config("demo", ["cluster.num_cpus=1"]).cluster, quiet=True)
print(json.dumps({"started": started, **{k: os.environ.get(k) for k in LOCAL_TRAIN_SETTINGS}}))
"""


def test_a_local_cluster_gets_ray_trains_local_settings_unless_the_user_chose():
    """Starting its own Ray, a run turns off Ray Train's preemption watcher and polls its
    workers sooner; a value already in the environment is the user's and stays."""
    unset = ("RAY_ADDRESS", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "1.5"
    done = subprocess.run(
        [sys.executable, "-c", _START_LOCAL], capture_output=True, text=True, env=env, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "started": True,
        "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1.5",
    }
