"""A SELF run whose meta-skill labeler is an OpenAI-compatible endpoint: a local HTTP server.

The server plays a strong model that critiques the demo world's problems correctly (it knows
the gold), and misbehaves on purpose: it answers 429 and 500, once stalls past the client's
timeout, and always fails on two problems. The run must complete, record those two failures
per record, and keep the API key out of everything it writes.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from http_stub import chat_reply, reply_json, start

from actors.coordinator import run_recipe
from selfevo.config import load_config
from selfevo.demo_world.oracle import critique
from selfevo.demo_world.problems import make_problems
from selfevo.records import REJECTED, table_to_records

SECRET = "sk-run-test-9876543210"
META = 24


class Judge:
    def __init__(self, faults: list[str]):
        self.faults, self.lock, self.requests = list(faults), threading.Lock(), []
        self.problems = {p.question: p for p in make_problems("meta", META)}
        self.broken = set(list(self.problems)[:2])
        self.auth: set[str] = set()

    def answer(self, content: str) -> str | None:
        """The critique or refinement a strong model would write; None to fail."""
        for question, problem in self.problems.items():
            if question in content:
                if question in self.broken:
                    return None
                if content.startswith("Fix: "):
                    return problem.solution()
                given = content.rsplit("Check: ", 1)[1].strip()
                return critique(
                    problem.a, problem.b, problem.op, f"The answer is {given}."
                ).feedback
        return "I cannot tell.\nJudgement: incorrect"


def _handler(judge: Judge):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with judge.lock:
                judge.requests.append(body)
                judge.auth.add(self.headers.get("Authorization", ""))
                fault = judge.faults.pop(0) if judge.faults else None
            if fault == "429":
                return reply_json(self, 429, {"error": "rate limited"}, {"Retry-After": "0"})
            if fault == "500":
                return reply_json(self, 500, {"error": "overloaded"})
            if fault == "stall":
                time.sleep(2.0)
            text = judge.answer(body["messages"][-1]["content"])
            if text is None:
                return reply_json(self, 500, {"error": "always fails"})
            reply_json(self, 200, chat_reply(text))

    return Handler


@pytest.fixture
def judge_url():
    judge = Judge(["429", "500", "stall", "429", "500"])
    httpd, url = start(_handler(judge))
    yield url, judge
    httpd.shutdown()


def test_run_with_an_openai_labeler_completes_and_records_failures(
    ray_cluster, judge_url, tmp_path, monkeypatch
):
    url, judge = judge_url
    monkeypatch.setenv("SELFEVO_RUN_TEST_KEY", SECRET)
    config = load_config(
        "demo_arithmetic",
        [
            f"run.output_dir={tmp_path}",
            "run.name=labeled",
            "recipe.rounds=0",
            f"data.meta_examples={META}",
            "eval.num_problems=16",
            "eval.sc_samples=0",
            "train.max_steps=2",
            "train.micro_batch_size=8",
            "recipe.labeler.kind=openai",
            f"recipe.labeler.base_url={url}",
            "recipe.labeler.model=strong-judge",
            "recipe.labeler.api_key_env=SELFEVO_RUN_TEST_KEY",
            "recipe.labeler.timeout_s=1",
            "recipe.labeler.max_retries=3",
            "recipe.labeler.concurrency=4",
        ],
    )
    summary = run_recipe(config)
    run_dir = Path(tmp_path) / "labeled"
    assert summary["complete"] and [r["round"] for r in summary["rounds"]] == [0]
    labeled = table_to_records(pq.read_table(run_dir / "meta/labeled.parquet"))
    assert len(labeled) == META  # every prompt accounted for
    failed = [r for r in labeled if r.status == REJECTED]
    assert sorted(r.prompt for r in failed) == sorted(judge.broken)
    assert all(
        r.reject_reason.startswith("labeler_error: gave up after 4 attempts") for r in failed
    )
    assert summary["meta"]["labeler_errors"] == 2
    good = [r for r in labeled if r.status != REJECTED]
    assert all(r.feedback and r.judgement for r in good)
    assert not judge.faults  # every fault was served and retried past
    assert judge.auth == {f"Bearer {SECRET}"}
    assert {b["model"] for b in judge.requests} == {"strong-judge"}
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yaml", ".log", ".md", ".jsonl"):
            assert SECRET not in path.read_text(errors="ignore"), path
