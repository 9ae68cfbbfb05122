"""Pairwise judging of two systems' answers (``selfevo judge``), by a local model or an
OpenAI-compatible endpoint.

Every question is judged twice, A's answer first and then B's first; :mod:`selfevo.judging`
turns the two verdicts into a win, tie or loss for A. The local judge runs in-process on
the engine the config picks (vLLM on a GPU when installed, else the HF engine); the endpoint
judge uses the labeler's HTTP client (retries, backoff, the key from the environment). A
request that fails for good leaves its verdict unparsed, which makes the pair a tie.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from selfevo.generation import GenerationParams
from selfevo.judging import (
    AnswerFileError,
    PairwiseSummary,
    combine,
    judge_messages,
    parse_preference,
    read_answers,
    summarize,
)
from selfevo.readers import read_prompts
from selfevo.records import Message


class EndpointJudge:
    """An OpenAI-compatible chat endpoint as the judge."""

    def __init__(self, client: Any, concurrency: int = 8, max_tokens: int = 512):
        self.client, self.concurrency, self.max_tokens = client, concurrency, max_tokens
        self.errors: list[str] = []

    def _one(self, messages: list[Message]) -> str | None:
        from actors.labelers import LabelerError

        try:
            return self.client.chat(messages, max_tokens=self.max_tokens, temperature=0.0)
        except LabelerError as exc:
            self.errors.append(str(exc))
            return None

    def __call__(self, prompts: list[list[Message]]) -> list[str | None]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, prompts))


class LocalJudge:
    """A local checkpoint (or hub name) as the judge, greedy."""

    def __init__(self, engine: Any, max_tokens: int = 512):
        self.engine, self.max_tokens = engine, max_tokens
        self.errors: list[str] = []

    def __call__(self, prompts: list[list[Message]]) -> list[str | None]:
        params = GenerationParams(temperature=0.0, max_new_tokens=self.max_tokens)
        return [outputs[0].text for outputs in self.engine.generate(prompts, params)]


def read_questions(path: str | Path) -> dict[str, str]:
    records = read_prompts(path).raise_if_bad().records
    return {r.prompt_id: r.question_text() for r in records}


def _answers_for(questions: dict[str, str], path: str | Path) -> dict[str, str]:
    answers = read_answers(path)
    missing = [qid for qid in questions if qid not in answers]
    if missing:
        raise AnswerFileError(
            f"{path}: no answer for {len(missing)} question id(s), e.g. {missing[:5]}"
        )
    return answers


def judge_files(
    judge: Any,
    questions_path: str | Path,
    a_path: str | Path,
    b_path: str | Path,
    output: str | Path | None = None,
) -> PairwiseSummary:
    """Judge every question's A and B answers in both orders; write one JSON line per
    question to ``output`` (both judgements, both verdicts, the outcome for A)."""
    questions = read_questions(questions_path)
    a, b = _answers_for(questions, a_path), _answers_for(questions, b_path)
    ids = list(questions)
    prompts = []
    for qid in ids:
        prompts.append(judge_messages(questions[qid], a[qid], b[qid]))
        prompts.append(judge_messages(questions[qid], b[qid], a[qid]))
    texts = judge(prompts)
    verdicts = [parse_preference(t) for t in texts]
    pairs = list(zip(verdicts[0::2], verdicts[1::2], strict=True))
    if output is not None:
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w") as sink:
            for k, qid in enumerate(ids):
                first, swapped = pairs[k]
                row = {
                    "id": qid,
                    "a_first": first,
                    "b_first": swapped,
                    "outcome_for_a": combine(first, swapped),
                    "judgement_a_first": texts[2 * k],
                    "judgement_b_first": texts[2 * k + 1],
                }
                sink.write(json.dumps(row) + "\n")
    return summarize(pairs)


def build_judge(
    judge: str,
    *,
    judge_model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    timeout_s: float = 60.0,
    max_retries: int = 5,
    concurrency: int = 8,
    max_tokens: int = 512,
    backend: str = "auto",
) -> EndpointJudge | LocalJudge:
    """An endpoint judge for an ``http(s)://`` base URL, else a local model judge."""
    if judge.startswith(("http://", "https://")):
        from actors.labelers import OpenAIChatClient

        if not judge_model:
            raise ValueError("an endpoint judge needs --judge-model (the endpoint's model name)")
        client = OpenAIChatClient(judge, judge_model, api_key_env, timeout_s, max_retries)
        return EndpointJudge(client, concurrency, max_tokens)
    from actors.engines import build_engine, choose_backend

    engine = build_engine(choose_backend(backend), model=judge)
    return LocalJudge(engine, max_tokens)
