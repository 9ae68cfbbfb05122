"""`selfevo train` on a pipeline records file: only kept rows train; the output loads."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

pytest.importorskip("deepspeed")

from actors.models import build_tiny_llama, load_model
from selfevo.cli import main
from selfevo.records import Record, records_to_table

pytestmark = pytest.mark.integration


def test_train_command_on_records(ray_cluster, tmp_path, capsys):
    model = build_tiny_llama(tmp_path / "base")
    records = []
    for i in range(40):
        record = Record(id=f"p{i}#0", prompt_id=f"p{i}", prompt=f"{i}+1=", task="math")
        records.append(
            record.keep(f"The answer is {i + 1}.") if i % 4 else record.reject("judged_incorrect")
        )
    data = tmp_path / "round.parquet"
    pq.write_table(records_to_table(records), data)
    argv = [
        "train",
        "demo",
        f"train.data={data}",
        f"model.name_or_path={model}",
        f"run.output_dir={tmp_path}",
        "run.name=t",
        "train.num_workers=1",
        "train.cpus_per_worker=0.5",
        "train.micro_batch_size=8",
        "train.gradient_accumulation_steps=2",
        "train.max_steps=3",
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["examples"] == 30 and summary["steps"] == 3
    assert load_model(summary["hf_checkpoint"]).config.model_type == "llama"


def test_train_command_needs_data(capsys):
    assert main(["train", "demo"]) == 2
    assert "train.data" in capsys.readouterr().err
