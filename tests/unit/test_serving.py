"""The serve API's pure logic: requests checked field by field, model names and modes, a run's
models and its ``best`` alias, and the response and stream bodies."""

from __future__ import annotations

import json

import pytest

from selfevo.serving import (
    BEST,
    DIRECT,
    REFINE,
    REFINE_SC,
    SC,
    Choice,
    RequestError,
    ServeLimits,
    completion_body,
    parse_chat_request,
    run_models,
    split_model_name,
    stream_chunks,
)

SERVED = {"round0", "round1", "best"}
LIMITS = ServeLimits(max_prompt_chars=100, max_tokens=64, max_n=4, refine_steps=2)


def _body(**changes):
    body = {"model": "round1", "messages": [{"role": "user", "content": "2+2="}]}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def _refused(body) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse_chat_request(body, SERVED, LIMITS)
    return caught.value


@pytest.mark.parametrize(
    "name, expected",
    [
        ("round2", ("round2", DIRECT)),
        ("round2+refine", ("round2", REFINE)),
        ("best+sc", ("best", SC)),
        ("round1+refine+sc", ("round1", REFINE_SC)),
        ("round1+sc+refine", ("round1", REFINE_SC)),
    ],
)
def test_model_names_carry_the_mode(name, expected):
    assert split_model_name(name) == expected


def test_a_plain_request_is_direct_with_the_servers_defaults():
    request = parse_chat_request(_body(), SERVED, LIMITS)
    assert (request.model, request.mode, request.n, request.refine_steps) == (
        "round1",
        DIRECT,
        1,
        0,
    )
    assert request.messages[0].content == "2+2=" and request.max_tokens is None


def test_refine_steps_default_to_the_limit_and_the_extension_field_can_lower_them():
    assert parse_chat_request(_body(model="round1+refine"), SERVED, LIMITS).refine_steps == 2
    request = parse_chat_request(
        _body(selfevo={"mode": "refine+sc", "refine_steps": 1}), SERVED, LIMITS
    )
    assert (request.mode, request.refine_steps) == (REFINE_SC, 1)


def test_text_parts_are_joined():
    content = [{"type": "text", "text": "2+"}, {"type": "text", "text": "2="}]
    request = parse_chat_request(_body(messages=[{"role": "user", "content": content}]), SERVED)
    assert request.messages[0].content == "2+2="


@pytest.mark.parametrize(
    "changes, param, status",
    [
        ({"model": None}, "model", 400),
        ({"model": "round9"}, "model", 404),
        ({"model": "round1+think"}, "model", 404),
        ({"messages": None}, "messages", 400),
        ({"messages": []}, "messages", 400),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", 400),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content", 400),
        ({"messages": [{"role": "user", "content": "x" * 101}]}, "messages", 400),
        ({"max_tokens": 65}, "max_tokens", 400),
        ({"max_completion_tokens": 0}, "max_completion_tokens", 400),
        ({"n": 5}, "n", 400),
        ({"n": True}, "n", 400),
        ({"temperature": "hot"}, "temperature", 400),
        ({"top_p": 1.5}, "top_p", 400),
        ({"top_p": 0}, "top_p", 400),
        ({"response_format": {"type": "json_object"}}, "response_format", 400),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", 400),
        ({"stream": "yes"}, "stream", 400),
        ({"tools": [{"type": "function"}]}, "tools", 400),
        ({"selfevo": {"mode": "think"}}, "selfevo.mode", 400),
        ({"model": "round1+refine", "selfevo": {"refine_steps": 3}}, "selfevo.refine_steps", 400),
    ],
)
def test_bad_fields_are_refused_by_name(changes, param, status):
    error = _refused(_body(**changes))
    assert (error.param, error.status) == (param, status)
    body = error.body()["error"]
    assert body["param"] == param and body["message"] and body["type"]


def test_a_body_that_is_not_an_object_is_refused():
    assert _refused(["model"]).status == 400


def _write_run(run_dir, rounds_acc):
    steps = [
        {"name": "meta.train", "status": "done", "outputs": {"model": "meta/model/hf"}},
        *(
            {"name": f"round{r}.train", "status": "done", "outputs": {"model": f"round{r}/m"}}
            for r in range(1, len(rounds_acc))
        ),
        {"name": "round9.train", "status": "pending", "outputs": {}},
    ]
    (run_dir / "manifest.json").write_text(json.dumps({"steps": steps}))
    rounds = [{"round": r, "direct_acc": acc} for r, acc in enumerate(rounds_acc)]
    (run_dir / "summary.json").write_text(json.dumps({"rounds": rounds}))


def test_a_runs_models_are_its_rounds_and_best_is_the_most_accurate_later_round(tmp_path):
    _write_run(tmp_path, [0.5, 0.7, 0.7])
    models = run_models(tmp_path, "seed-model")
    assert models == {
        "round0": str(tmp_path / "meta/model/hf"),
        "round1": str(tmp_path / "round1/m"),
        "round2": str(tmp_path / "round2/m"),
        BEST: str(tmp_path / "round2/m"),
    }
    _write_run(tmp_path, [0.9, 0.7, 0.7])
    assert run_models(tmp_path, "seed-model")[BEST] == str(tmp_path / "meta/model/hf")


def test_a_folder_without_a_manifest_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"manifest\.json"):
        run_models(tmp_path, "seed-model")


def test_the_stream_carries_the_same_text_usage_and_trace():
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    body = completion_body("chatcmpl-1", "round1", [Choice("4."), Choice("5.")], usage, [{"a": 1}])
    assert '"usage"' not in "".join(stream_chunks(body))  # only when the request asks
    events = list(stream_chunks(body, include_usage=True))
    assert events[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk["choices"]:
            texts[choice["index"]] += choice["delta"].get("content", "")
    assert texts == {0: "4.", 1: "5."}
    assert chunks[-1]["usage"] == usage and chunks[-1]["selfevo"] == {"trace": [{"a": 1}]}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}


def test_one_request_over_the_concurrency_limit_gets_429_until_one_leaves():
    from selfevo.serving import ConcurrencyLimit

    limit = ConcurrencyLimit(2)
    limit.enter()
    limit.enter()
    with pytest.raises(RequestError) as caught:
        limit.enter()
    assert caught.value.status == 429
    assert "serve.max_concurrent_requests=2" in caught.value.message
    assert caught.value.body()["error"]["type"] == "rate_limit_error"
    limit.leave()
    limit.enter()
    assert limit.active == 2


def test_serve_models_picks_some_of_a_runs_models_and_names_a_missing_one(tmp_path):
    from selfevo.serving import pick_models

    _write_run(tmp_path, [0.5, 0.7])
    models = run_models(tmp_path, "seed-model")
    assert list(pick_models(models, [])) == ["round0", "round1", "best"]
    assert list(pick_models(models, ["best"])) == ["best"]
    with pytest.raises(ValueError, match="round7"):
        pick_models(models, ["best", "round7"])
