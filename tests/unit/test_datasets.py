"""Where a run's prompts come from: meta set, fresh pool slices per round, the eval set."""

import json

import pytest

from selfevo.config import load_config
from selfevo.datasets import SourceError, eval_problems, meta_prompts, pool_slice


def test_builtin_pool_gives_a_fresh_slice_each_round():
    config = load_config("demo", ["data.prompts_per_round=16", "data.meta_examples=8"])
    first, second = pool_slice(config, 1), pool_slice(config, 2)
    assert len(first) == len(second) == 16
    assert {r.id for r in first}.isdisjoint({r.id for r in second})
    assert {r.round for r in second} == {2}
    meta = meta_prompts(config)
    assert len(meta) == 8 and {r.id for r in meta}.isdisjoint({r.id for r in first + second})
    held = eval_problems(config)
    assert len(held) == config.eval.num_problems and all(r.gold for r in held)


def test_file_pool_keeps_its_tail_for_meta_and_refuses_running_out(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "prompt": f"q{i}", "gold": str(i)}) + "\n" for i in range(10)
        )
    )
    config = load_config(
        "demo", [f"data.prompt_pool={pool}", "data.prompts_per_round=4", "data.meta_examples=2"]
    )
    assert [r.id for r in meta_prompts(config)] == ["p8", "p9"]
    assert [r.id for r in pool_slice(config, 2)] == ["p4", "p5", "p6", "p7"]
    with pytest.raises(SourceError, match="round 3 needs prompts 8-11 but only 8"):
        pool_slice(config, 3)


def test_unknown_builtins_and_gold_less_eval_sets_are_refused(tmp_path):
    config = load_config("demo", ["data.prompt_pool=builtin:nope"])
    with pytest.raises(SourceError, match="unknown builtin data set 'builtin:nope'"):
        pool_slice(config, 1)
    plain = tmp_path / "eval.jsonl"
    plain.write_text(json.dumps({"id": "1", "prompt": "q"}) + "\n")
    config = load_config("demo", [f"eval.dataset={plain}"])
    with pytest.raises(SourceError, match="needs gold answers"):
        eval_problems(config)
