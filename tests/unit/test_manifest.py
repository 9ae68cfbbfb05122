"""The run manifest: plan, resume at the first unfinished step, refuse a changed config."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from selfevo.config import load_config, to_yaml
from selfevo.manifest import (
    CONFIG_FILE,
    DONE,
    RUNNING,
    ConfigChanged,
    Manifest,
    ManifestError,
    changed_settings,
    config_hash,
    open_run,
    plan_steps,
    run_config_hash,
)
from selfevo.recipes import RECIPES

SELF_ROUND = RECIPES["self"].round_steps


def _hash(*overrides: str) -> str:
    return config_hash(
        OmegaConf.to_container(OmegaConf.structured(load_config("demo", list(overrides))))
    )


def test_plan_has_meta_rounds_and_report():
    steps = plan_steps(2, SELF_ROUND)
    assert steps[:3] == ["meta.label", "meta.train", "round0.eval"]
    assert steps[3:9] == [
        f"round1.{s}" for s in ("generate", "critique", "filter", "train", "handoff", "eval")
    ]
    assert steps[-1] == "report" and len(steps) == 3 + 12 + 1


def test_each_recipe_plans_its_own_round_and_meta_only_when_asked():
    assert plan_steps(1, RECIPES["isheep"].round_steps, meta=False) == [
        "round0.eval",
        *(f"round1.{s}" for s in ("synthesize", "generate", "assess", "filter", "train")),
        "round1.handoff",
        "round1.eval",
        "report",
    ]
    ma = plan_steps(1, RECIPES["mistake_analysis"].round_steps, meta=True)
    assert ma[:3] == ["meta.label", "meta.train", "round0.eval"]
    assert ma[3:6] == ["round1.generate", "round1.analyze", "round1.filter"]


def test_a_run_dir_of_another_recipe_is_refused(tmp_path):
    Manifest.open(tmp_path, "h", 1, RECIPES["isheep"].round_steps, meta=False)
    with pytest.raises(ManifestError, match="do not match"):
        Manifest.open(tmp_path, "h", 1, RECIPES["mistake_analysis"].round_steps, meta=False)


def test_steps_run_in_order_and_resume_after_a_kill(tmp_path):
    manifest = Manifest.open(tmp_path, "h", 1, SELF_ROUND)
    for name in ("meta.label", "meta.train"):
        manifest.start(name)
        manifest.finish(name, outputs={"dir": f"/x/{name}"}, metrics={"n": 1})
    manifest.start("round0.eval")  # killed here: left running
    with pytest.raises(ManifestError, match="next step"):
        manifest.start("round1.generate")
    reopened = Manifest.open(tmp_path, "h", 1, SELF_ROUND)
    assert reopened.next_step() == "round0.eval"
    assert reopened.step("round0.eval").status == RUNNING
    assert reopened.is_done("meta.train") and reopened.step("meta.train").outputs == {
        "dir": "/x/meta.train"
    }


def test_finishing_every_step_completes_the_run(tmp_path):
    manifest = Manifest.open(tmp_path, "h", 1, SELF_ROUND)
    while (name := manifest.next_step()) is not None:
        manifest.start(name)
        manifest.finish(name)
    assert manifest.complete()
    assert all(
        s["status"] == DONE for s in json.loads((tmp_path / "manifest.json").read_text())["steps"]
    )
    with pytest.raises(ManifestError, match="cannot finish"):
        manifest.finish("report")


def test_more_rounds_extend_a_finished_plan(tmp_path):
    manifest = Manifest.open(tmp_path, "h", 1, SELF_ROUND)
    while (name := manifest.next_step()) is not None:
        manifest.start(name)
        manifest.finish(name)
    # A longer run on the same config: rounds so far stay done, the new ones are pending.
    longer = Manifest.open(tmp_path, "h", 2, SELF_ROUND)
    assert longer.is_done("round1.eval") and longer.next_step() == "round2.generate"
    assert [s.name for s in longer.steps] == plan_steps(2, SELF_ROUND)
    assert longer.step("report").status == "pending"
    with pytest.raises(ManifestError, match="not lose them"):
        Manifest.open(tmp_path, "h", 0, SELF_ROUND)


def test_changed_config_is_refused(tmp_path):
    Manifest.open(tmp_path, _hash(), 1, SELF_ROUND)
    with pytest.raises(ManifestError, match="another config"):
        Manifest.open(tmp_path, _hash("train.learning_rate=0.5"), 1, SELF_ROUND)


def test_hash_ignores_where_how_fast_and_how_far():
    assert _hash() == _hash("run.output_dir=/elsewhere", "cluster.num_cpus=8", "recipe.rounds=3")
    assert _hash() != _hash("run.seed=1")


def test_a_changed_config_is_refused_naming_what_changed(tmp_path):
    config = load_config("demo", [f"run.output_dir={tmp_path}"])
    run_dir = tmp_path / "demo"
    open_run(config, run_dir, RECIPES["self"])
    (run_dir / CONFIG_FILE).write_text(to_yaml(config))
    # More rounds extend the run; a changed learning rate or labeler is named.
    longer = load_config("demo", [f"run.output_dir={tmp_path}", "recipe.rounds=2"])
    assert open_run(longer, run_dir, RECIPES["self"]).next_step() == "meta.label"
    labeler = ["recipe.labeler.kind=openai", "recipe.labeler.model=m", "recipe.labeler.base_url=x"]
    changed = load_config(
        "demo", [f"run.output_dir={tmp_path}", "train.learning_rate=0.5", *labeler]
    )
    with pytest.raises(ConfigChanged) as refused:
        open_run(changed, run_dir, RECIPES["self"])
    message = str(refused.value)
    assert "train.learning_rate: 0.001 -> 0.5" in message
    assert "recipe.labeler.kind: 'oracle' -> 'openai'" in message
    assert "run.output_dir" not in message and "recipe.rounds" not in message


def test_selfevo_run_refuses_another_configs_run_dir_before_ray_starts(tmp_path, capsys):
    from selfevo.cli import main

    config = load_config("demo", [f"run.output_dir={tmp_path}"])
    open_run(config, tmp_path / "demo", RECIPES["self"])
    saved = to_yaml(config)
    (tmp_path / "demo" / CONFIG_FILE).write_text(saved)
    code = main(["run", f"run.output_dir={tmp_path}", "train.epochs=1"])
    assert code == 2
    assert "train.epochs: 2 -> 1" in capsys.readouterr().err
    assert (tmp_path / "demo" / CONFIG_FILE).read_text() == saved
    # Fewer rounds than the run dir planned: refused the same way, not with a traceback.
    code = main(["run", f"run.output_dir={tmp_path}", "recipe.rounds=0"])
    assert code == 2
    assert "a run can gain rounds, not lose them" in capsys.readouterr().err


def test_changed_settings_name_a_setting_only_one_side_has():
    before = {"train": {"epochs": 3}, "run": {"output_dir": "a"}}
    after = {"train": {"epochs": 3, "packing": True}, "run": {"output_dir": "b"}}
    assert changed_settings(before, after) == ["train.packing: (unset) -> True"]
    assert changed_settings(after, after) == []


def test_a_refusal_without_a_readable_saved_config_still_says_what_it_refuses(tmp_path):
    config = load_config("demo", [f"run.output_dir={tmp_path}"])
    run_dir = tmp_path / "demo"
    open_run(config, run_dir, RECIPES["self"])
    # The same settings under another hash (an older selfevo hashed another way).
    (run_dir / CONFIG_FILE).write_text(to_yaml(config))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({**manifest, "config_hash": "0" * 16}))
    with pytest.raises(ConfigChanged, match=r"no setting differs from its config\.yaml"):
        open_run(config, run_dir, RECIPES["self"])
    (run_dir / CONFIG_FILE).write_text("train: [unclosed")
    with pytest.raises(ConfigChanged, match=f"hash {'0' * 16}, now {run_config_hash(config)}"):
        open_run(config, run_dir, RECIPES["self"])
