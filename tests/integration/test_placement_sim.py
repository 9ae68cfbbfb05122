"""The 70B preset placed by Ray's real scheduler on a simulated 4 x 8-GPU cluster.

``selfevo plan --simulate`` builds a ``ray.cluster_utils.Cluster`` of four fake nodes with 8
logical GPUs each and reserves the engine pool and the trainer exactly as a run does (same
bundles, same strategies), with stand-in actors in place of vLLM engines and trainer workers.
It runs in a subprocess: a process joins one Ray cluster, and the integration tests' session
cluster may be up in this one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from actors.placement import engine_bundle, trainer_worker_resources
from selfevo.config import load_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PRESET = "scale/llama3_70b_4x8"


def _selfevo(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "selfevo.cli", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def simulated() -> dict:
    done = _selfevo("plan", PRESET, "--simulate", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)["simulated"]


def test_engines_sit_in_tp_sized_bundles_inside_one_node(simulated):
    assert len(simulated["engines"]) == 2
    for engine in simulated["engines"]:
        assert len(engine["gpu_ids"]) == 4  # the tp group: four GPUs of one node
        assert engine["node"] == engine["bundle_node"] >= 0


def test_trainer_workers_span_the_nodes(simulated):
    workers = simulated["trainer_workers"]
    assert len(workers) == 24
    assert all(len(w["gpu_ids"]) == 1 and w["node"] == w["bundle_node"] for w in workers)
    per_node = defaultdict(int)
    for worker in workers:
        per_node[worker["node"]] += 1
    assert len(per_node) == 3 and max(per_node.values()) == 8


def test_nothing_is_oversubscribed(simulated):
    assert all(gpus <= 8 for gpus in simulated["gpus_reserved_per_node"])
    assert sum(simulated["gpus_reserved_per_node"]) == 2 * 4 + 24
    used = defaultdict(list)
    for placed in [*simulated["engines"], *simulated["trainer_workers"]]:
        used[placed["node"]] += placed["gpu_ids"]
    for node, ids in used.items():
        assert len(ids) == len(set(ids)) <= 8, f"node {node} hands a GPU out twice: {ids}"
        assert set(ids) <= set(range(8))


def test_a_plan_that_does_not_fit_is_refused_before_simulating():
    done = _selfevo("plan", PRESET, "cluster.num_nodes=1", "--simulate", "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["fits"] is False and "simulated" not in report


def test_runs_reserve_what_the_simulation_reserves():
    config = load_config(PRESET)
    assert engine_bundle(config) == {"CPU": 8.0, "GPU": 4.0}
    assert trainer_worker_resources(config) == {"CPU": 6.0, "GPU": 1.0}
    demo = load_config("demo")  # HF engines on CPU reserve no GPU
    assert engine_bundle(demo) == {"CPU": 0.25}
    assert trainer_worker_resources(demo) == {"CPU": 0.75}
