"""`selfevo serve` for real: Ray Serve over HF engine pools, called with the official `openai`
client and over plain HTTP.

The served "run" is a run directory laid out as a run leaves it (manifest, summary, config,
one checkpoint per round), its rounds the demo world's trained seed model and a copy of it,
so the answers can be checked against `selfevo refine`'s on the same prompts.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from omegaconf import OmegaConf

ray = pytest.importorskip("ray")
openai = pytest.importorskip("openai")

from actors.evaluate import refine  # noqa: E402
from actors.serve import start_serving  # noqa: E402
from selfevo.cli.serve import served_models  # noqa: E402
from selfevo.config import load_config  # noqa: E402
from selfevo.demo_world import SEED_CHECKPOINT  # noqa: E402
from selfevo.demo_world.problems import make_problems  # noqa: E402
from selfevo.records import Record  # noqa: E402

pytestmark = pytest.mark.integration
KEY = "test-serve-key-not-a-secret-elsewhere"
KEY_ENV = "SELFEVO_TEST_SERVE_KEY"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fake_run(root):
    """A finished two-round run's layout: round1 scored best."""
    for folder in ("meta/model/hf", "round1/model/hf"):
        shutil.copytree(SEED_CHECKPOINT, root / folder)
    steps = [
        {"name": "meta.train", "status": "done", "outputs": {"model": "meta/model/hf"}},
        {"name": "round1.train", "status": "done", "outputs": {"model": "round1/model/hf"}},
    ]
    (root / "manifest.json").write_text(json.dumps({"steps": steps}))
    rounds = [{"round": 0, "direct_acc": 0.5}, {"round": 1, "direct_acc": 0.6}]
    (root / "summary.json").write_text(json.dumps({"rounds": rounds}))
    config = load_config("demo_arithmetic", ["engine.backend=hf"])
    (root / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    return root


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    run_dir = _fake_run(tmp_path_factory.mktemp("served-run"))
    overrides = [
        "engine.num_engines=2",
        "engine.cpus_per_engine=0.25",
        f"serve.port={_free_port()}",
        f"serve.api_key_env={KEY_ENV}",
        "serve.max_n=4",
        "serve.max_tokens=1024",
    ]
    config, models = served_models(str(run_dir), overrides)
    handle = start_serving(config, models, KEY, emit=lambda _: None)
    yield handle, config
    handle.stop()


@pytest.fixture(scope="module")
def client(served):
    # Generous: two test files share the two cores under `make test`.
    return openai.OpenAI(base_url=served[0].url, api_key=KEY, max_retries=0, timeout=600)


PROBLEMS = make_problems("pool", 4)


def _ask(client, model: str, question: str, **kwargs):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], **kwargs
    )


def _refined(served, tmp_path, samples: int, max_iters: int) -> list[dict]:
    """What `selfevo refine` answers for PROBLEMS on round1's pool (the same engines).

    Sampled (``samples`` > 1), each prompt goes alone under the id the server gives a request's
    prompt, as the sampling seed derives from the ids; greedy, ids do not matter.
    """
    handle, config = served
    ids = ["prompt"] * len(PROBLEMS) if samples > 1 else [p.id for p in PROBLEMS]
    prompts = [
        Record(id=i, prompt_id=i, prompt=p.question, task=config.recipe.task)
        for i, p in zip(ids, PROBLEMS, strict=True)
    ]
    groups = [[p] for p in prompts] if samples > 1 else [prompts]
    lines = []
    for k, group in enumerate(groups):
        out = tmp_path / f"refined{k}.jsonl"
        router = handle.routers["round1"]
        refine(
            config, router, group, out, samples=samples, max_iters=max_iters, emit=lambda _: None
        )
        lines += [json.loads(line) for line in out.read_text().splitlines()]
    return lines


def test_every_round_and_best_are_listed(client):
    assert sorted(m.id for m in client.models.list()) == ["best", "round0", "round1"]


def test_direct_and_refined_answers_equal_selfevo_refine(served, client, tmp_path):
    expected = _refined(served, tmp_path, samples=1, max_iters=2)
    for problem, line in zip(PROBLEMS, expected, strict=True):
        direct = _ask(client, "round1", problem.question)
        assert direct.choices[0].message.content == line["samples"][0]["response"]
        refined = _ask(client, "best+refine", problem.question)
        assert refined.choices[0].message.content == line["output"]
        trace = refined.model_extra["selfevo"]["trace"]
        assert trace[0]["refinements"] == line["samples"][0]["refinements"]
        assert trace[0]["judgement"] == line["samples"][0]["judgement"]
        assert refined.usage.completion_tokens > direct.usage.completion_tokens


def test_self_consistency_equals_selfevo_refines_vote(served, client, tmp_path):
    """Seeded sampling: the server's samples are `selfevo refine --samples 3`'s, so the vote is."""
    expected = _refined(served, tmp_path, samples=3, max_iters=0)
    config = served[1]
    sampling = {"n": 3, "temperature": config.eval.sc_temperature, "seed": config.run.seed}
    voted_lines = [line for line in expected if line["answer"] is not None]
    assert len(voted_lines) >= 2
    differing = 0
    for problem, line in zip(PROBLEMS, expected, strict=True):
        voted = _ask(client, "round1+sc", problem.question, **sampling)
        assert len(voted.choices) == 1
        samples = [s["response"] for s in voted.model_extra["selfevo"]["trace"]]
        assert samples == [s["response"] for s in line["samples"]]  # the same 3 samples
        differing += len(set(samples)) > 1
        if line["answer"] is not None:
            assert voted.choices[0].message.content == line["output"]
    assert differing  # sampled at temperature 0.7, not one answer repeated


def test_streaming_yields_the_same_text(client):
    question = PROBLEMS[0].question
    whole = _ask(client, "round1+refine", question).choices[0].message.content
    stream = _ask(client, "round1+refine", question, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == whole


@pytest.mark.parametrize(
    "changes, status, param",
    [
        ({"messages": []}, 400, "messages"),
        ({"model": "round7"}, 404, "model"),
        ({"n": 5}, 400, "n"),
        ({"max_tokens": 1025}, 400, "max_tokens"),
        ({"messages": [{"role": "user"}]}, 400, "messages[0].content"),
    ],
)
def test_bad_requests_get_openai_error_bodies(client, changes, status, param):
    body = {"model": "round1", "messages": [{"role": "user", "content": "1+1?"}], **changes}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**body)
    assert caught.value.status_code == status
    assert caught.value.body["param"] == param and caught.value.body["message"]


def _post(url: str, body: dict, key: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_missing_field_over_plain_http_is_named(served):
    status, body = _post(served[0].url + "/chat/completions", {"model": "round1"}, KEY)
    assert status == 400 and body["error"]["param"] == "messages"
    status, body = _post(served[0].url + "/chat/completions", {"messages": []}, KEY)
    assert status == 400 and body["error"]["param"] == "model"


def test_without_the_key_the_answer_is_401(served):
    status, body = _post(served[0].url + "/chat/completions", {"model": "round1"})
    assert status == 401 and body["error"]["type"] == "authentication_error"
    status, _ = _post(served[0].url + "/chat/completions", {"model": "round1"}, "wrong-key")
    assert status == 401


def test_64_concurrent_requests_are_answered_also_while_an_engine_is_killed(
    served, client, tmp_path
):
    handle, config = served
    problems = make_problems("pool", 64)
    prompts = [
        Record(id=p.id, prompt_id=p.id, prompt=p.question, task=config.recipe.task)
        for p in problems
    ]
    router = handle.routers["round1"]
    refine(config, router, prompts, tmp_path / "direct.jsonl", max_iters=0, emit=lambda _: None)
    lines = (tmp_path / "direct.jsonl").read_text().splitlines()
    expected = [json.loads(line)["samples"][0]["response"] for line in lines]
    ask = lambda p: _ask(client, "round1", p.question).choices[0].message.content  # noqa: E731
    with ThreadPoolExecutor(64) as pool:
        assert list(pool.map(ask, problems)) == expected
    engine = ray.get(router.engine_handles.remote())[0]

    def kill_while_it_serves():
        for _ in range(6000):
            if ray.get(router.requests_in_flight.remote())[0]:
                break
            time.sleep(0.01)
        ray.kill(engine)

    killer = threading.Thread(target=kill_while_it_serves)
    killer.start()
    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(ask, problems))
    killer.join()
    assert answers == expected
    assert ray.get(router.engine_handles.remote())[0] != engine  # replaced, not just spared


def test_the_projects_labeler_and_judge_talk_to_selfevo_serve(served, tmp_path, monkeypatch):
    """The OpenAI labeler and `selfevo judge`'s endpoint judge, over real HTTP, with the key."""
    from actors.judge import build_judge, judge_files
    from actors.labelers import OpenAIChatClient, OpenAILabeler

    monkeypatch.setenv(KEY_ENV, KEY)
    url = served[0].url
    records = [
        Record(id=p.id, prompt_id=p.id, prompt=p.question, task=served[1].recipe.task)
        for p in PROBLEMS
    ]
    for record, problem in zip(records, PROBLEMS, strict=True):
        record.response = f"The answer is {problem.answer}."
    client = OpenAIChatClient(url, "round1", KEY_ENV, timeout_s=120, max_retries=1)
    OpenAILabeler(client, concurrency=4).label(records)
    assert all(r.status in ("kept", "rejected") for r in records)
    assert not [r.reject_reason for r in records if "labeler_error" in (r.reject_reason or "")]
    assert all(r.feedback for r in records)  # every critique came back from the server

    files = {
        "questions": [{"id": p.id, "prompt": p.question} for p in PROBLEMS],
        "a": [{"id": p.id, "output": str(p.answer)} for p in PROBLEMS],
        "b": [{"id": p.id, "output": "7"} for p in PROBLEMS],
    }
    for name, rows in files.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    questions, a, b = (tmp_path / f"{name}.jsonl" for name in files)
    judge = build_judge(url, judge_model="best", api_key_env=KEY_ENV, timeout_s=120, max_retries=1)
    summary = judge_files(judge, questions, a, b)
    assert not judge.errors and summary.total == len(PROBLEMS)


def test_the_serve_command_serves_until_sigterm_and_never_prints_the_key(tmp_path):
    """`selfevo serve MODEL` as a user starts it: its own local Ray, the key from the
    environment, up until SIGTERM, then a clean exit."""
    import os
    import signal
    import subprocess
    import sys

    port = _free_port()
    env = {**os.environ, "SELFEVO_SERVE_API_KEY": KEY}
    env.pop("RAY_ADDRESS", None)
    command = [
        sys.executable, "-m", "selfevo.cli", "serve", "builtin:arithmetic-seed",
        "engine.backend=hf", f"serve.port={port}", "cluster.num_cpus=2",
    ]  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        server = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/v1"
            deadline = time.monotonic() + 300
            ready = f"[serve] {url} serves builtin:arithmetic-seed"
            while time.monotonic() < deadline and server.poll() is None:
                if ready in log.read_text():
                    break
                time.sleep(0.5)
            assert server.poll() is None and ready in log.read_text(), log.read_text()[-3000:]
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30).close()
            ask = {
                "model": "builtin:arithmetic-seed",
                "messages": [{"role": "user", "content": "2+2?"}],
            }
            assert _post(url + "/chat/completions", ask)[0] == 401
            status, body = _post(url + "/chat/completions", ask, KEY)
            assert status == 200 and body["choices"][0]["message"]["content"]
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=120)
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert "an API key is required" in output and "[serve] stopping" in output
    assert KEY not in output
