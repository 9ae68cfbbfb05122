"""The streaming round pipeline: Ray Data stages over one shared engine pool.

Each stage of :func:`selfevo.stages.self_chain` becomes a lazy ``map_batches`` step whose UDF
is an async zero-CPU actor forwarding its rows to the engine pool. Each stage keeps several
batches in flight (:func:`batches_in_flight`: at least two per engine, and for vLLM enough rows
to fill its running batch), so every engine stays busy even in a one-stage step, and batch k+1
is generated while batch k is critiqued. Every stage writes its output batches as
Parquet under ``<out_dir>/stages/<n>-<stage>/``; the driver streams the final rows into
``<out_dir>/output.parquet``, prints progress, checks that every input row came out exactly
once, and puts the file's rows back in input order (they stream out in whichever order their
batches finish, which varies from run to run; every step after, which reads the file, then
sees the same order in every run of a config: a seeded draw over the rows, a first-wins
dedup, the next step's batches). A batch whose engine call fails for good is rejected row by
row with the error as the reason; the run goes on.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from selfevo.generation import GenerationParams
from selfevo.records import (
    RECORD_SCHEMA,
    Record,
    Reject,
    read_records,
    records_to_table,
    status_counts,
    table_to_records,
)
from selfevo.stages import FILTER, Stage, finalize


class AccountingError(RuntimeError):
    """The output does not hold every input row exactly once."""


def _batch_name(table: pa.Table) -> str:
    ids = "\n".join(table.column("id").to_pylist())
    return hashlib.sha1(ids.encode()).hexdigest()[:16]


class StageWorker:
    """A Ray Data UDF running one stage: select rows, ask the pool, write results back."""

    def __init__(
        self,
        stage: Stage,
        label: str,
        router: Any,
        params: GenerationParams,
        template_set: str,
        judged: bool,
        out_dir: str,
    ):
        self.stage = stage
        self.label, self.router, self.params = label, router, params
        self.template_set, self.judged = template_set, judged
        self.out_dir = Path(out_dir) / label
        self.out_dir.mkdir(parents=True, exist_ok=True)

    async def __call__(self, batch: pa.Table) -> pa.Table:
        records = table_to_records(batch.select(RECORD_SCHEMA.names))
        if self.stage.name == FILTER:
            for record in records:
                finalize(record, judged=self.judged)
        else:
            await run_stage(self.stage, records, self.router, self.params, self.template_set)
        table = records_to_table(records)
        # Named by the batch's ids, so a retried batch overwrites instead of duplicating.
        pq.write_table(table, self.out_dir / f"{_batch_name(table)}.parquet")
        self.router.report.remote(self.label, len(records))
        return table


async def run_stage(
    stage: Stage, records: list[Record], router: Any, params: GenerationParams, template_set: str
) -> None:
    """One stage over ``records`` in place: the rows it selects, in one call to the pool.

    A batch the pool gives up on is not lost: each of its rows is rejected with the reason.
    """
    chosen = [r for r in records if stage.select(r)]
    if not chosen:
        return
    prompts = [stage.messages(r, template_set) for r in chosen]
    call_params = params
    if not params.greedy and params.seed is not None:
        # A seed per batch, from its rows: sampling repeats exactly on a resumed run,
        # whichever engine serves the batch and in whatever order batches arrive.
        ids = "\n".join(r.id for r in chosen)
        digest = hashlib.sha1(f"{params.seed}:{stage.name}:{ids}".encode()).hexdigest()
        call_params = params.with_(seed=int(digest[:8], 16))
    try:
        completions = await router.generate.remote(prompts, call_params)
    except Exception as exc:  # the pool gave up on this batch: account for every row
        for record in chosen:
            record.reject(Reject.ENGINE_ERROR, f"{stage.name}: {exc}"[:500])
        return
    for record, outputs in zip(chosen, completions, strict=True):
        stage.apply(record, outputs[0], params.max_new_tokens)


@dataclass
class PipelineResult:
    output_path: Path
    rows: int
    wall_seconds: float
    counts: dict[str, int]
    stage_rows: dict[str, int] = field(default_factory=dict)


class _Progress:
    """Prints rows done per stage, rows/s and time left, every ``interval`` seconds in which
    some row moved (a stalled pipeline does not repeat itself)."""

    def __init__(
        self, router: Any, labels: list[str], total: int, interval: float, emit: Callable, name: str
    ):
        self.router, self.labels, self.total, self.name = router, labels, total, name
        self.interval, self.emit = interval, emit
        self.done = 0
        self._last: tuple | None = None
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.line()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.line()

    def line(self) -> None:
        try:
            per_stage = ray.get(self.router.get_progress.remote(), timeout=10)
        except Exception:
            per_stage = {}
        position = (tuple(sorted(per_stage.items())), self.done)
        if position == self._last:
            return
        self._last = position
        elapsed = time.perf_counter() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = f"{(self.total - self.done) / rate:.0f}s" if rate > 0 else "?"
        stages = " | ".join(f"{label} {per_stage.get(label, 0)}" for label in self.labels)
        done = f"done {self.done}/{self.total} ({rate:.1f} rows/s, {left} left)"
        self.emit(f"[{self.name}] {stages} | {done}")


def _quiet_ray_data() -> None:
    """selfevo prints its own per-stage progress; Ray Data's would repeat it at length."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False


def batches_in_flight(router: Any, batch_size: int) -> int:
    """Batches each stage keeps in flight: two per engine (one running, one queued), and for
    vLLM enough rows to fill its running batch (``max_num_seqs``)."""
    pool = ray.get(router.describe.remote())
    per_engine = 2
    if pool["backend"] != "hf" and pool["max_num_seqs"]:
        per_engine = max(per_engine, math.ceil(pool["max_num_seqs"] / batch_size))
    return per_engine * pool["num_engines"]


def stage_labels(chain: list[Stage]) -> list[str]:
    return [f"{i + 1}-{stage.name}" for i, stage in enumerate(chain)]


def run_pipeline(
    records: list[Record],
    router: Any,
    chain: list[Stage],
    out_dir: str | Path,
    *,
    params: GenerationParams,
    feedback_params: GenerationParams,
    template_set: str = "default",
    batch_size: int = 32,
    progress_interval_s: float = 10.0,
    progress_name: str = "pipeline",
    emit: Callable[[str], None] = print,
) -> PipelineResult:
    """Run ``records`` through ``chain`` on the engine pool behind ``router``.

    Returns:
        Where the output is (its rows in input order) and what happened to every row. Raises
        AccountingError if the output does not hold each input id exactly once.
    """
    out_dir = Path(out_dir)
    (out_dir / "stages").mkdir(parents=True, exist_ok=True)
    input_ids = [r.id for r in records]
    if len(set(input_ids)) != len(input_ids):
        raise ValueError("the pipeline's input has duplicate record ids")
    _quiet_ray_data()
    ray.get(router.reset_progress.remote())
    started = time.perf_counter()
    labels = stage_labels(chain)
    dataset = _staged_dataset(
        records,
        router,
        chain,
        out_dir / "stages",
        params,
        feedback_params,
        template_set,
        batch_size,
    )
    output_path = out_dir / "output.parquet"
    progress_args = (router, labels, len(records), progress_interval_s, emit, progress_name)
    with _Progress(*progress_args) as progress:
        seen, counts = _write_output(dataset, output_path, progress)
    _check_accounting(input_ids, seen)
    pq.write_table(in_input_order(pq.read_table(output_path), input_ids), output_path)
    return PipelineResult(
        output_path=output_path,
        rows=sum(seen.values()),
        wall_seconds=time.perf_counter() - started,
        counts=dict(counts),
        stage_rows=ray.get(router.get_progress.remote()),
    )


def run_configured(
    records: list[Record],
    router: Any,
    chain: list[Stage],
    out_dir: str | Path,
    config: Any,
    params: GenerationParams,
    feedback_params: GenerationParams,
    emit: Callable[[str], None] = print,
) -> list[Record]:
    """:func:`run_pipeline` with ``config``'s template set and batch size; the rows out, in
    the order they went in.

    Its progress lines are named after the output's last three folders (``run/round1/critique``),
    so no two steps' lines read alike."""
    result = run_pipeline(
        records,
        router,
        chain,
        out_dir,
        params=params,
        feedback_params=feedback_params,
        template_set=config.recipe.template_set,
        batch_size=config.engine.max_batch_size,
        emit=emit,
        progress_name="/".join(Path(out_dir).parts[-3:]),
    )
    return read_records(result.output_path)


def _staged_dataset(
    records, router, chain, stages_dir, params, feedback_params, template_set, batch_size
) -> ray.data.Dataset:
    """``records`` as a Ray dataset flowing through one async actor per stage of ``chain``."""
    blocks = [
        records_to_table(records[i : i + batch_size]) for i in range(0, len(records), batch_size)
    ]
    dataset = ray.data.from_arrow(blocks or [records_to_table([])])
    judged = any(stage.feedback for stage in chain)
    in_flight = batches_in_flight(router, batch_size)
    for stage, label in zip(chain, stage_labels(chain), strict=True):
        dataset = dataset.map_batches(
            StageWorker,
            fn_constructor_kwargs={
                "stage": stage,
                "label": label,
                "router": router,
                "params": feedback_params if stage.feedback else params,
                "template_set": template_set,
                "judged": judged,
                "out_dir": str(stages_dir),
            },
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=1, max_concurrent_calls_per_actor=in_flight),
            num_cpus=0,
        )
    return dataset


def _write_output(dataset, output_path: Path, progress) -> tuple[Counter[str], Counter[str]]:
    """Stream the dataset's rows into ``output_path``; the ids seen and the status counts."""
    seen: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    with pq.ParquetWriter(output_path, RECORD_SCHEMA) as writer:
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            batch = batch.select(RECORD_SCHEMA.names).cast(RECORD_SCHEMA)
            writer.write_table(batch)
            seen.update(batch.column("id").to_pylist())
            counts.update(status_counts(table_to_records(batch)))
            progress.done += batch.num_rows
    return seen, counts


def in_input_order(table: pa.Table, input_ids: list[str]) -> pa.Table:
    """``table``'s rows (one per id of ``input_ids``) in the order of ``input_ids``."""
    positions = pc.index_in(table.column("id"), value_set=pa.array(input_ids, pa.string()))
    return table.take(pc.sort_indices(positions))


def _check_accounting(input_ids: list[str], seen: Counter[str]) -> None:
    missing = [i for i in input_ids if i not in seen]
    doubled = [i for i, n in seen.items() if n > 1]
    foreign = set(seen) - set(input_ids)
    if missing or doubled or foreign:
        raise AccountingError(
            f"output does not match input: {len(missing)} missing (e.g. {missing[:5]}), "
            f"{len(doubled)} duplicated (e.g. {doubled[:5]}), {len(foreign)} unknown"
        )
