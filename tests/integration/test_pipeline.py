"""The streaming generate -> feedback -> refine -> rejudge -> filter chain on a local Ray."""

from __future__ import annotations

import threading
import time

import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from actors.pipeline import in_input_order, run_configured, run_pipeline  # noqa: E402
from actors.pool import EnginePool  # noqa: E402
from selfevo.config import load_config  # noqa: E402
from selfevo.generation import GenerationParams  # noqa: E402
from selfevo.records import PENDING, Record, records_to_table, table_to_records  # noqa: E402
from selfevo.stages import FEEDBACK, GENERATE, REDERIVED_ANSWER, expand_samples, self_chain  # noqa: E402
from tests.conftest import arithmetic_prompts  # noqa: E402

pytestmark = pytest.mark.integration
PARAMS = GenerationParams(max_new_tokens=16)


def _records(count: int, samples: int = 1) -> list[Record]:
    prompts = [
        Record(id=f"p{i}", prompt_id=f"p{i}", prompt=text, task="math", gold="0")
        for i, text in enumerate(arithmetic_prompts(count))
    ]
    return expand_samples(prompts, samples)


@pytest.fixture
def pool(ray_cluster, varied_model_dirs):
    engines = EnginePool(
        {
            "backend": "hf",
            "model": str(varied_model_dirs[0]),
            "max_batch_size": 32,
            "num_threads": 1,
        },
        num_engines=2,
        cpus_per_engine=0.5,
    )
    engines.wait_ready()
    yield engines
    engines.shutdown()


def _run(records, pool, out_dir, chain=None, batch_size=8, **kwargs):
    return run_pipeline(
        records,
        pool.router,
        chain or self_chain(1),
        out_dir,
        params=PARAMS,
        feedback_params=PARAMS,
        batch_size=batch_size,
        **{"emit": lambda _: None, **kwargs},
    )


def _assert_every_row_once(result, records):
    rows = table_to_records(pq.read_table(result.output_path))
    assert sorted(r.id for r in rows) == sorted(r.id for r in records)
    assert all(r.status != PENDING for r in rows)
    assert all(r.reject_reason for r in rows if r.status == "rejected")
    return rows


def test_whole_chain_accounts_for_every_prompt(pool, tmp_path):
    records = _records(48, samples=2)  # 96 rows
    lines = []
    result = _run(records, pool, tmp_path, batch_size=16, progress_interval_s=1, emit=lines.append)
    rows = _assert_every_row_once(result, records)
    assert result.rows == 96 and result.counts["pending"] == 0
    assert result.counts["kept"] + result.counts["rejected"] == 96
    # Each stage saw every row and wrote them all as Parquet under stages/.
    for label in ("1-generate", "2-feedback", "3-refine", "4-rejudge", "5-filter"):
        assert result.stage_rows[label] == 96
        written = pq.read_table(tmp_path / "stages" / label)
        assert sorted(written.column("id").to_pylist()) == sorted(r.id for r in records)
    assert all(r.response is not None for r in rows)
    assert lines and "done 96/96" in lines[-1] and "rows/s" in lines[-1]


def test_killing_an_engine_mid_run_loses_and_duplicates_nothing(pool, tmp_path, ray_cluster):
    records = _records(96)
    handles = ray_cluster.get(pool.router.engine_handles.remote())

    def kill_when_generation_started():
        deadline = time.time() + 120
        while time.time() < deadline:
            if ray_cluster.get(pool.router.get_progress.remote()).get("1-generate", 0) >= 16:
                break
            time.sleep(0.05)
        ray_cluster.kill(handles[0])

    killer = threading.Thread(target=kill_when_generation_started)
    killer.start()
    result = _run(records, pool, tmp_path)
    killer.join()
    rows = _assert_every_row_once(result, records)
    assert pool.stats()["restarts"] >= 1
    assert not [r for r in rows if (r.reject_reason or "").startswith("engine_error")]


def test_restarted_engine_serves_the_current_weights(pool, varied_model_dirs, ray_cluster):
    prompts = arithmetic_prompts(6, seed=9)
    pool.load_weights(str(varied_model_dirs[1]))
    expected = [c[0].text for c in pool.generate(prompts, PARAMS)]
    for handle in ray_cluster.get(pool.router.engine_handles.remote()):
        ray_cluster.kill(handle)
    after_restart = [c[0].text for c in pool.generate(prompts, PARAMS)]
    assert after_restart == expected
    # generate restarted the engine it was routed to; the health check finds the other one.
    assert pool.check_health() == 1
    assert pool.check_health() == 0
    assert pool.stats()["restarts"] == 2


def test_generate_only_chain_keeps_every_response(pool, tmp_path):
    records = _records(16)
    result = _run(records, pool, tmp_path, chain=self_chain(1, ["generate"]))
    rows = _assert_every_row_once(result, records)
    assert {r.status for r in rows} <= {"kept", "rejected"}
    assert all(r.feedback is None for r in rows)


def test_workers_judge_the_way_the_chain_says(pool, tmp_path):
    # An untrained model's critiques state no answer: judged by re-derivation, every one is
    # rejected for that, never for a missing verdict line (the workers run the stages given).
    records = _records(16)
    chain = self_chain(0, [GENERATE, FEEDBACK], judge_by=REDERIVED_ANSWER)
    rows = _assert_every_row_once(_run(records, pool, tmp_path, chain=chain), records)
    judged = [r for r in rows if r.feedback is not None]
    assert judged
    for row in judged:
        assert row.judgement is not None or "its own" in row.reject_reason
        assert "verdict" not in (row.reject_reason or "")


def test_one_stage_step_spreads_over_every_engine(pool, tmp_path):
    # Before, each stage held one batch in flight, so a one-stage step used one engine only.
    for handle in ray.get(pool.router.engine_handles.remote()):
        ray.get(handle.reset_stats.remote())
    records = _records(64)
    result = _run(records, pool, tmp_path, chain=self_chain(0, [GENERATE], with_filter=False))
    _assert_every_row_once_or_pending(result, records)
    served = [engine["prompts"] for engine in pool.stats()["engines"]]
    assert sum(served) == 64
    assert min(served) >= 16, f"one engine sat idle: prompts per engine {served}"


def test_a_step_gets_its_rows_back_in_the_order_they_went_in(pool, tmp_path):
    # Batches finish in whichever order the two engines serve them; order-dependent steps
    # after a pipeline (I-SHEEP's seeded warm-up draws, its first-wins dedup) must not see it,
    # whether they take the rows returned or read the step's output file.
    records = _records(48)
    records = records[1::2][::-1] + records[::2]  # neither input nor id order is sorted
    for record in records[:8]:  # the first batch runs longest, so it often finishes last
        record.prompt = (record.prompt or "") + " Think." * 60
    config = load_config(None, ["engine.max_batch_size=8"])
    chain = self_chain(0, [GENERATE], with_filter=False)
    rows = run_configured(records, pool.router, chain, tmp_path, config, PARAMS, PARAMS, print)
    assert [r.id for r in rows] == [r.id for r in records]
    assert all(r.response is not None for r in rows)
    written = pq.read_table(tmp_path / "output.parquet").column("id").to_pylist()
    assert written == [r.id for r in records]


def test_rows_are_put_back_in_input_order_whatever_order_they_finished_in():
    finished = records_to_table(_records(10)[::-1])  # stream order: last batch first
    wanted = [f"p{i}#0" for i in (3, 1, 4, 0, 5, 9, 2, 6, 8, 7)]
    ordered = in_input_order(finished, wanted)
    assert ordered.column("id").to_pylist() == wanted
    assert sorted(ordered.column("prompt").to_pylist()) == sorted(
        finished.column("prompt").to_pylist()
    )


def _assert_every_row_once_or_pending(result, records):
    rows = table_to_records(pq.read_table(result.output_path))
    assert sorted(r.id for r in rows) == sorted(r.id for r in records)
    assert all(r.response is not None for r in rows)


def test_an_engine_dead_between_steps_is_replaced_by_sleep_and_wake(pool, ray_cluster):
    prompts = arithmetic_prompts(4, seed=3)
    expected = [c[0].text for c in pool.generate(prompts, PARAMS)]
    ray_cluster.kill(ray_cluster.get(pool.router.engine_handles.remote())[1])
    pool.sleep()  # raised ActorDiedError before: the broadcast now replaces the dead engine
    ray_cluster.kill(ray_cluster.get(pool.router.engine_handles.remote())[0])
    pool.wake()
    assert pool.stats()["restarts"] == 2
    assert all(not engine["sleeping"] for engine in pool.stats()["engines"])
    assert [c[0].text for c in pool.generate(prompts, PARAMS)] == expected


def test_a_missing_model_is_refused_before_any_actor_starts(ray_cluster, tmp_path):
    from selfevo.config import load_config

    config = load_config("demo", [])
    actors_before = len(ray.util.list_named_actors(all_namespaces=True))
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(FileNotFoundError, match="no-such-checkpoint"):
        EnginePool.from_config(config, model_path=str(missing))
    with pytest.raises(FileNotFoundError, match="neither a local model directory"):
        EnginePool.from_config(config, model_path="no-such-org/no-such-model")
    assert len(ray.util.list_named_actors(all_namespaces=True)) == actors_before
