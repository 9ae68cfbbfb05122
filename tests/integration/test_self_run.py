"""SELF end to end on the real stack: a reduced demo run, and a killed run that resumes.

Local Ray (2 CPUs), the shipped demo seed model, Ray Data through the HF engine pool, Ray
Train + DeepSpeed ZeRO-1 (the demo's stage) on CPU, the coordinator actor and its weight handoff.
"""

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray

from actors.coordinator import run_recipe
from actors.models import load_model
from selfevo.config import load_config
from selfevo.manifest import Manifest, plan_steps
from selfevo.parsers import parse_judgement
from selfevo.recipes import RECIPES
from selfevo.records import KEPT, REJECTED, table_to_records


def reduced_config(tmp_path: Path, name: str, reduced: list[str]):
    return load_config("demo", [*reduced, f"run.output_dir={tmp_path}", f"run.name={name}"])


def _ids(path: Path) -> list[str]:
    return pq.read_table(path, columns=["id"]).column("id").to_pylist()


@pytest.fixture(scope="module")
def finished_run(ray_cluster, tmp_path_factory, reduced_demo):
    config = reduced_config(tmp_path_factory.mktemp("runs"), "whole", reduced_demo)
    summary = run_recipe(config)
    return Path(config.run.output_dir) / config.run.name, summary


def test_reduced_demo_completes_and_accounts_for_every_prompt(finished_run):
    run_dir, summary = finished_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [s["name"] for s in manifest["steps"]] == plan_steps(1, RECIPES["self"].round_steps)
    assert {s["status"] for s in manifest["steps"]} == {"done"}
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    for entry in summary["rounds"]:
        assert 0.0 <= entry["direct_acc"] <= 1.0 and entry["direct_ci"][0] <= entry["direct_acc"]
        assert entry["refine_acc"] is not None and entry["sc_acc"] is not None
    assert summary["rounds"][0]["kept_acc"] is None
    # 24 prompts x 2 samples enter round 1; each leaves the filter exactly once, kept or
    # rejected with a reason, after passing through generate and critique.
    generated = _ids(run_dir / "round1/generate/output.parquet")
    assert len(generated) == len(set(generated)) == 48
    assert sorted(_ids(run_dir / "round1/critique/output.parquet")) == sorted(generated)
    filtered = table_to_records(pq.read_table(run_dir / "round1/filtered.parquet"))
    assert sorted(r.id for r in filtered) == sorted(generated)
    assert all(r.status in (KEPT, REJECTED) for r in filtered)
    assert all(r.reject_reason for r in filtered if r.status == REJECTED)
    assert summary["rounds"][1]["generated"] == 48
    assert summary["rounds"][1]["kept"] == sum(r.status == KEPT for r in filtered)
    # The demo judges as SELF does, by the critique's own verdict line. A 3-step meta-skill
    # model seldom writes one: such rows are rejected, and the reason says so.
    for record in filtered:
        if record.judgement is not None:
            assert record.judgement == parse_judgement(record.feedback).judgement
        else:
            assert record.status == REJECTED and record.reject_reason
    unjudged = [r for r in filtered if (r.reject_reason or "").startswith("no_judgement")]
    assert all("verdict" in r.reject_reason or "Judgement" in r.reject_reason for r in unjudged)
    labeled = _ids(run_dir / "meta/labeled.parquet")
    assert len(labeled) == 32


def test_each_checkpoint_loads_and_the_report_is_written(finished_run):
    run_dir, _ = finished_run
    for model in ("meta/model/hf", "round1/model/hf"):
        assert load_model(str(run_dir / model)).num_parameters() > 0
    for name in ("summary.json", "report.md", "accuracy.png", "filter.png", "time.png"):
        assert (run_dir / name).is_file(), name
    # Meta-skill learning peaks at train.learning_rate, the round at train.round_learning_rate.
    config = load_config("demo")
    peak = {}
    for step in ("meta", "round1"):
        lines = (run_dir / step / "model" / "metrics.jsonl").read_text().splitlines()
        peak[step] = max(json.loads(line).get("lr", 0.0) for line in lines)
    assert config.train.round_learning_rate < config.train.learning_rate
    assert config.train.round_learning_rate < peak["meta"] <= config.train.learning_rate
    assert 0 < peak["round1"] <= config.train.round_learning_rate


def _comparable(run_dir: Path) -> list[dict]:
    steps = json.loads((run_dir / "manifest.json").read_text())["steps"]
    return [{k: s[k] for k in ("name", "status", "outputs", "metrics")} for s in steps]


def _kill_the_coordinator(run_dir: Path) -> None:
    """Kill the live coordinator of ``run_dir`` (a named actor) as a crash would."""
    from actors.coordinator import coordinator_name

    ray.kill(ray.get_actor(coordinator_name(run_dir)))


class Disturber:
    """An ``emit`` callback for run_recipe that kills one engine of the live pool at set moments
    (as a round's generation and critique are under way, while the engines sit idle in the
    filter step, and while they sleep during training) and, with ``coordinator_after``, the
    coordinator itself once that step is done (the next one has just started). It then
    ignores the dead run's last lines until :meth:`resume`."""

    def __init__(self, run_dir: Path, coordinator_after: str | None = None):
        self.killed: list[str] = []
        self.armed_for_training = False
        self.run_dir, self.coordinator_after = run_dir, coordinator_after
        self.listening = True

    def resume(self) -> None:
        self.listening = True

    def __call__(self, line: str) -> None:
        if not self.listening:
            return
        if line.startswith(("[round1.generate] started", "[round1.critique] started")):
            self._kill(line, wait_for_rows=True)
        elif line.startswith("[round1.filter] started"):
            self._kill(line)
        elif line.startswith("[round1.train] started"):
            self.armed_for_training = True
        elif line.startswith("[train]") and self.armed_for_training:
            self.armed_for_training = False
            self._kill("asleep during round1.train")
        if self.coordinator_after and line.startswith(f"[{self.coordinator_after}] done"):
            self.coordinator_after = None
            self.armed_for_training = False
            self.listening = False
            _kill_the_coordinator(self.run_dir)

    def _kill(self, moment: str, wait_for_rows: bool = False) -> None:
        from actors.pool import ROUTER_PREFIX

        names = [
            a
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(ROUTER_PREFIX)
        ]
        router = ray.get_actor(names[-1]["name"], namespace=names[-1]["namespace"])
        deadline = time.time() + 30
        while wait_for_rows and time.time() < deadline:
            if sum(ray.get(router.get_progress.remote()).values()) > 0:
                break
            time.sleep(0.02)
        ray.kill(ray.get(router.engine_handles.remote())[0])
        self.killed.append(moment)


def _without_timing(summary: dict) -> list[dict]:
    timing = ("wall_seconds", "seconds", "step_seconds")
    return [{k: v for k, v in r.items() if k not in timing} for r in summary["rounds"]]


def test_engines_and_the_coordinator_killed_at_any_point_leave_the_run_unchanged(
    finished_run, tmp_path, reduced_demo
):
    """One disturbed run: engines killed mid-generation, mid-critique, idle and asleep during
    training, then the coordinator as the handoff starts; resumed, it ends with the same
    manifest and summary as the undisturbed run."""
    whole_dir, whole_summary = finished_run
    config = reduced_config(tmp_path, "disturbed", reduced_demo)
    run_dir = tmp_path / "disturbed"
    disturber = Disturber(run_dir, coordinator_after="round1.train")
    with pytest.raises(ray.exceptions.RayActorError):
        run_recipe(config, emit=disturber, poll_s=0.05)
    killed = Manifest.open(
        run_dir,
        json.loads((run_dir / "manifest.json").read_text())["config_hash"],
        1,
        RECIPES["self"].round_steps,
    )
    assert killed.is_done("round1.train")
    assert killed.next_step() in ("round1.handoff", "round1.eval")
    finished_before = {s.name: s.started for s in killed.steps if s.status == "done"}
    generate_mtime = (run_dir / "round1/generate/output.parquet").stat().st_mtime
    assert disturber.killed == [
        "[round1.generate] started",
        "[round1.critique] started",
        "[round1.filter] started",
        "asleep during round1.train",
    ]

    disturber.resume()
    summary = run_recipe(config, emit=disturber, poll_s=0.05)
    resumed = json.loads((run_dir / "manifest.json").read_text())["steps"]
    for step in resumed:  # finished steps were not redone
        if step["name"] in finished_before:
            assert step["started"] == finished_before[step["name"]], step["name"]
    assert (run_dir / "round1/generate/output.parquet").stat().st_mtime == generate_mtime
    assert _comparable(run_dir) == _comparable(whole_dir)
    assert _without_timing(summary) == _without_timing(whole_summary)
    # The crashed coordinator's engine reservation was released when the run resumed.
    held = [
        group["name"]
        for group in ray.util.placement_group_table().values()
        if group["state"] == "CREATED" and group["name"].startswith("selfevo-engines:")
    ]
    assert not held, held
