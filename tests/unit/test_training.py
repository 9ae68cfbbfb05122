"""Pure training logic: example building, data mixing per mode, schedule, DeepSpeed config."""

from __future__ import annotations

import pytest

from selfevo.config import load_config
from selfevo.records import Message, Record
from selfevo.training import (
    TrainExample,
    deepspeed_config,
    examples_from_records,
    examples_from_rows,
    learning_rate_at,
    mfu,
    mix_training_set,
    shuffled,
    starting_model,
    train_flops_per_token,
)


def _ex(name: str, n: int) -> list[TrainExample]:
    return [TrainExample(f"{name}{i}", (Message("user", "q"),), "a", name) for i in range(n)]


def test_only_kept_records_train_on_their_final_response():
    kept = Record(id="a#0", prompt_id="a", prompt="2+2?", task="math").keep("4")
    rejected = Record(id="b#0", prompt_id="b", prompt="3+3?").reject("judged_incorrect")
    [example] = examples_from_records([kept, rejected])
    assert example.target == "4" and "The answer is N" in example.messages[-1].content


def test_rows_as_examples_and_their_errors():
    examples = examples_from_rows(
        [
            {"prompt": "hi", "response": "yo"},
            {"id": "m", "messages": [{"role": "user", "content": "x"}], "target": "y"},
        ]
    )
    assert [(e.id, e.target) for e in examples] == [("0", "yo"), ("m", "y")]
    with pytest.raises(ValueError, match="row 0: field 'response'"):
        examples_from_rows([{"prompt": "hi"}])
    with pytest.raises(ValueError, match="row 0: needs a non-empty 'prompt'"):
        examples_from_rows([{"response": "x"}])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("restart", {"r0": 2, "r1": 3, "meta": 4}),
        ("continual", {"r1": 3, "meta": 4}),
        ("latest", {"r1": 3, "meta": 4}),
    ],
)
def test_mix_by_mode(mode, expected):
    mixed = mix_training_set(mode, _ex("meta", 4), [_ex("r0", 2), _ex("r1", 3)], 1.0)
    counts: dict[str, int] = {}
    for example in mixed:
        counts[example.source] = counts.get(example.source, 0) + 1
    assert counts == expected


def test_meta_ratio_subsamples_and_repeats():
    assert (
        sum(
            e.source == "meta"
            for e in mix_training_set("latest", _ex("meta", 10), [_ex("r", 1)], 0.5)
        )
        == 5
    )
    assert (
        sum(
            e.source == "meta"
            for e in mix_training_set("latest", _ex("meta", 4), [_ex("r", 1)], 2.0)
        )
        == 8
    )
    assert mix_training_set("latest", [], [_ex("r", 2)], 1.0, seed=1) == mix_training_set(
        "latest", [], [_ex("r", 2)], 1.0, seed=1
    )
    with pytest.raises(ValueError, match="unknown training mode"):
        mix_training_set("sometimes", [], [], 1.0)


def test_mix_depends_on_contents_not_arrival_order():
    rows, meta = _ex("r", 20), _ex("meta", 10)
    first = mix_training_set("continual", meta, [rows], 0.5, seed=3)
    again = mix_training_set("continual", meta[::-1], [rows[::-1]], 0.5, seed=3)
    assert [e.id for e in first] == [e.id for e in again]
    assert [e.id for e in first] != [
        e.id for e in mix_training_set("continual", meta, [rows], 0.5, seed=4)
    ]


def test_shuffled_interleaves_sources_whatever_the_arrival_order():
    blocks = _ex("feedback", 30) + _ex("qa", 30)
    order = [e.source for e in shuffled(blocks, seed=0)]
    assert order != sorted(order)  # not one block after the other
    assert order[:30].count("qa") > 5 and order[30:].count("feedback") > 5
    assert shuffled(blocks[::-1], seed=0) == shuffled(blocks, seed=0)
    assert sorted(e.id for e in shuffled(blocks, 1)) == sorted(e.id for e in blocks)


def test_learning_rate_schedule():
    assert learning_rate_at(0, 100, 1.0, 10, "cosine") == pytest.approx(0.1)
    assert learning_rate_at(9, 100, 1.0, 10, "cosine") == pytest.approx(1.0)
    assert learning_rate_at(55, 100, 1.0, 10, "cosine") == pytest.approx(0.5)
    assert learning_rate_at(100, 100, 1.0, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert learning_rate_at(55, 100, 1.0, 10, "linear") == pytest.approx(0.5)
    assert learning_rate_at(80, 100, 1.0, 0, "constant") == 1.0


def test_deepspeed_config_from_train_config():
    train = load_config(
        "demo",
        [
            "train.zero_stage=3",
            "train.micro_batch_size=4",
            "train.gradient_accumulation_steps=2",
            "train.offload_params=true",
        ],
    ).train
    config = deepspeed_config(train, world_size=8, bf16=True)
    assert config["train_batch_size"] == 4 * 2 * 8
    assert config["zero_optimization"]["stage"] == 3
    assert config["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert config["bf16"] == {"enabled": True}
    stage2 = deepspeed_config(load_config("demo", ["train.zero_stage=2"]).train, 2, False)
    assert "offload_param" not in stage2["zero_optimization"]


def test_flops_and_mfu_arithmetic():
    # 7B parameters, 32 layers, 4096 wide, 4096 tokens: 6N + 12 L H S.
    flops = train_flops_per_token(7_000_000_000, 32, 4096, 4096)
    assert flops == pytest.approx(6 * 7e9 + 12 * 32 * 4096 * 4096)
    assert mfu(1000.0, flops, 989e12) == pytest.approx(1000 * flops / 989e12)
    assert mfu(1.0, 1.0, 0.0) == 0.0


def test_starting_model_by_mode():
    assert starting_model("restart", "base", "meta", "prev") == "meta"
    assert starting_model("restart", "base", None, "prev") == "base"
    assert starting_model("continual", "base", "meta", "prev") == "prev"
    assert starting_model("continual", "base", "meta", None) == "meta"
    assert starting_model("latest", "base", "meta", "prev") == "base"
    with pytest.raises(ValueError):
        starting_model("other", "b", None, None)
