"""The OpenAI-compatible chat API of ``selfevo serve``, as pure logic.

Request bodies are checked here (an error names the field, in OpenAI's error shape), a model
name is resolved to a served model and an inference mode, a run directory to the models it
can serve, and response bodies are built. The Ray Serve application (:mod:`actors.serve`)
does the I/O and the engine calls.

Model names. ``<model>`` answers directly. ``<model>+refine`` is SELF's self-refinement at
inference: answer, then critique and refine up to ``refine_steps`` times, stopping as soon as
the critic judges the answer correct. ``<model>+sc`` samples ``n`` answers and returns the
majority answer (self-consistency). ``<model>+refine+sc`` refines each sample before the
vote. A request's ``selfevo`` extension field may set ``mode`` and ``refine_steps`` instead.

Engine calls per request, with ``n`` samples and ``k`` refine steps at most (the ``n`` calls
of one stage go to the engines together):

============  ==========================  ==========================================
mode          calls                       choices returned
============  ==========================  ==========================================
direct        n                           n answers
refine        n x (2 + 2k) at most        n refined answers (critique trace attached)
sc            n                           1: the majority answer
refine+sc     n x (2 + 2k) at most        1: the majority of the refined answers
============  ==========================  ==========================================

(A refine step is a refinement and a re-critique of it; the first critique comes after the
answer.) Unlike OpenAI, ``sc`` modes return one choice for ``n`` samples: ``n`` is the vote's
size there.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfevo.records import Message

DIRECT, REFINE, SC, REFINE_SC = "direct", "refine", "sc", "refine+sc"
MODES = (DIRECT, REFINE, SC, REFINE_SC)
ROLES = ("system", "user", "assistant")
BEST = "best"
UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "logit_bias")


class RequestError(ValueError):
    """A request the API refuses: HTTP ``status`` and OpenAI's error body naming ``param``."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code=None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        kind = {401: "authentication_error", 429: "rate_limit_error"}.get(self.status, kind)
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for (``serve.*`` in the config)."""

    max_prompt_chars: int = 16000
    max_tokens: int = 1024
    max_n: int = 16
    refine_steps: int = 2


@dataclass
class ChatRequest:
    """A checked chat completions request."""

    model: str  # the served model (the name without its mode suffix)
    mode: str
    messages: list[Message]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stream: bool = False
    stop: tuple[str, ...] = ()
    seed: int | None = None
    refine_steps: int = 0
    requested_name: str = ""
    include_usage: bool = False  # streaming: a last chunk with the token usage


def split_model_name(name: str) -> tuple[str, str]:
    """``round2+refine`` -> (``round2``, ``refine``); no suffix is ``direct``."""
    base, _, suffix = name.partition("+")
    if not suffix:
        return base, DIRECT
    parts = set(suffix.split("+"))
    if parts == {REFINE}:
        return base, REFINE
    if parts == {SC}:
        return base, SC
    if parts == {REFINE, SC}:
        return base, REFINE_SC
    raise RequestError(
        f"unknown mode suffix {'+' + suffix!r} in model {name!r}; use +refine, +sc or +refine+sc",
        "model",
        404,
        "model_not_found",
    )


def parse_chat_request(
    body: Any, served: Collection[str], limits: ServeLimits = ServeLimits()
) -> ChatRequest:
    """Check a ``/v1/chat/completions`` body; raises :class:`RequestError` naming the field."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    for key in UNSUPPORTED:
        if body.get(key):
            raise RequestError(f"{key!r} is not supported by selfevo serve", key)
    if body.get("logprobs"):
        raise RequestError("'logprobs' is not supported by selfevo serve", "logprobs")
    response_format = body.get("response_format")
    if response_format not in (None, {"type": "text"}):
        raise RequestError(
            "only 'response_format': {'type': 'text'} is supported", "response_format"
        )
    name = _required(body, "model", str)
    base, mode = split_model_name(name)
    if base not in served:
        raise RequestError(
            f"the model {name!r} does not exist; served: {sorted(served)}",
            "model",
            404,
            "model_not_found",
        )
    messages = _messages(body.get("messages"), limits)
    extension = body.get("selfevo") or {}
    if not isinstance(extension, dict):
        raise RequestError("'selfevo' must be an object", "selfevo")
    mode = _mode(extension, mode)
    request = ChatRequest(
        model=base, mode=mode, messages=messages, requested_name=name, **_sampling(body, limits)
    )
    request.refine_steps = _refine_steps(extension, mode, limits)
    return request


def _required(body: dict, key: str, kind: type) -> Any:
    if key not in body:
        raise RequestError(f"you must provide the {key!r} field", key)
    value = body[key]
    if not isinstance(value, kind) or (kind is str and not value):
        raise RequestError(f"{key!r} must be a non-empty {kind.__name__}", key)
    return value


def _messages(raw: Any, limits: ServeLimits) -> list[Message]:
    if raw is None:
        raise RequestError("you must provide the 'messages' field", "messages")
    if not isinstance(raw, list) or not raw:
        raise RequestError("'messages' must be a non-empty array", "messages")
    messages = []
    for i, item in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise RequestError(f"{where} must be an object", where)
        role = item.get("role")
        if role not in ROLES:
            raise RequestError(f"{where}.role must be one of {list(ROLES)}", f"{where}.role")
        messages.append(Message(role, _content(item.get("content"), f"{where}.content")))
    if messages[-1].role != "user":
        raise RequestError("the last message must be the user's", f"messages[{len(raw) - 1}]")
    chars = sum(len(m.content) for m in messages)
    if chars > limits.max_prompt_chars:
        raise RequestError(
            f"the messages hold {chars} characters; this server takes at most "
            f"{limits.max_prompt_chars} (serve.max_prompt_chars)",
            "messages",
            code="context_length_exceeded",
        )
    return messages


def _content(content: Any, where: str) -> str:
    """A string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "".join(p["text"] for p in content)
    raise RequestError(f"{where} must be a string or a list of text parts", where)


def _number(body: dict, key: str, low: float, high: float, integer: bool = False) -> Any:
    value = body.get(key)
    if value is None:
        return None
    kind_ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not kind_ok or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise RequestError(f"{key!r} must be {kind} in [{low}, {high}]; got {value!r}", key)
    return value


def _sampling(body: dict, limits: ServeLimits) -> dict[str, Any]:
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, key, 1, limits.max_tokens, integer=True)
    top_p = _number(body, "top_p", 0, 1)
    if top_p == 0:
        raise RequestError("'top_p' must be in (0, 1]; got 0", "top_p")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (
        not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop)
    ):
        raise RequestError("'stop' must be a string or an array of at most 4 strings", "stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be a boolean", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError("'stream_options' must be an object", "stream_options")
    return {
        "max_tokens": max_tokens,
        "temperature": _number(body, "temperature", 0, 2),
        "top_p": top_p,
        "n": _number(body, "n", 1, limits.max_n, integer=True) or 1,
        "stream": stream,
        "stop": tuple(stop or ()),
        "seed": _number(body, "seed", 0, 2**31 - 1, integer=True),
        "include_usage": bool(options.get("include_usage")),
    }


def _mode(extension: dict, mode: str) -> str:
    chosen = extension.get("mode")
    if chosen is None:
        return mode
    if chosen not in MODES:
        raise RequestError(f"selfevo.mode must be one of {list(MODES)}", "selfevo.mode")
    return chosen


def _refine_steps(extension: dict, mode: str, limits: ServeLimits) -> int:
    if mode not in (REFINE, REFINE_SC):
        return 0
    steps = _number(
        {"selfevo.refine_steps": extension.get("refine_steps")},
        "selfevo.refine_steps",
        0,
        limits.refine_steps,
        integer=True,
    )
    return limits.refine_steps if steps is None else steps


class ConcurrencyLimit:
    """At most ``limit`` requests answered at once; :meth:`enter` refuses one more with 429.

    (Used from one event loop: no lock needed between the check and the count.)"""

    def __init__(self, limit: int):
        self.limit, self.active = limit, 0

    def enter(self) -> None:
        if self.active >= self.limit:
            raise RequestError(
                f"{self.active} requests are being answered, this server's limit "
                f"(serve.max_concurrent_requests={self.limit}); retry shortly",
                None,
                429,
                "rate_limit_exceeded",
            )
        self.active += 1

    def leave(self) -> None:
        self.active -= 1


# --- a run directory's models -----------------------------------------------------------


def run_models(run_dir: str | Path, starting_model: str) -> dict[str, str]:
    """Every round's model of a run (``round0`` is the model round 0 evaluated: the meta-skill
    model, or ``starting_model`` when the recipe has no meta-skill step), and ``best``: the
    round with the highest held-out direct accuracy in ``summary.json`` (ties: the later)."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{run_dir} holds no manifest.json: is it a selfevo run?")
    steps = json.loads(manifest_path.read_text())["steps"]
    models = {"round0": starting_model}
    for step in steps:
        model = (step.get("outputs") or {}).get("model")
        if step.get("status") != "done" or not model or not step["name"].endswith(".train"):
            continue
        prefix = step["name"].split(".")[0]
        name = "round0" if prefix == "meta" else prefix
        models[name] = str(run_dir / model)
    best = _best_round(run_dir / "summary.json", models)
    if best is not None:
        models[BEST] = models[best]
    return models


def pick_models(models: dict[str, str], wanted: list[str]) -> dict[str, str]:
    """The ``wanted`` names of a run's ``models`` (all of them when ``wanted`` is empty)."""
    unknown = [name for name in wanted if name not in models]
    if unknown:
        raise ValueError(
            f"serve.models names {unknown}, which this run does not have; it has {list(models)}"
        )
    return {name: path for name, path in models.items() if not wanted or name in wanted}


def _best_round(summary_path: Path, models: dict[str, str]) -> str | None:
    if not summary_path.is_file():
        return None
    scored = [
        (entry["direct_acc"], entry["round"])
        for entry in json.loads(summary_path.read_text()).get("rounds", [])
        if entry.get("direct_acc") is not None and f"round{entry['round']}" in models
    ]
    return f"round{max(scored)[1]}" if scored else None


# --- response bodies ----------------------------------------------------------------------


@dataclass
class Choice:
    text: str
    finish_reason: str = "stop"


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion_body(
    request_id: str,
    model: str,
    choices: list[Choice],
    usage: dict[str, int],
    trace: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` object; ``selfevo.trace`` carries each sample's self-refinement
    (or, for ``sc``, each sample voted on)."""
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(choices)
        ],
        "usage": usage,
        "selfevo": {"trace": trace or []},
    }


def stream_chunks(body: dict[str, Any], include_usage: bool = False) -> Iterator[str]:
    """A finished completion as server-sent events: per choice its role, its text and its
    finish reason; then a chunk with no choices carrying the trace (and the usage, when the
    request's ``stream_options.include_usage`` asked for it); then ``[DONE]``. (The answer is
    whole before the first byte: refinement and voting need the full text.)"""
    base = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"]}
    base["model"] = body["model"]
    for choice in body["choices"]:
        i = choice["index"]
        for delta, finish in (
            ({"role": "assistant", "content": ""}, None),
            ({"content": choice["message"]["content"]}, None),
            ({}, choice["finish_reason"]),
        ):
            chunk = {**base, "choices": [{"index": i, "delta": delta, "finish_reason": finish}]}
            yield f"data: {json.dumps(chunk)}\n\n"
    tail = {**base, "choices": [], "selfevo": body["selfevo"]}
    if include_usage:
        tail["usage"] = body["usage"]
    yield f"data: {json.dumps(tail)}\n\n"
    yield "data: [DONE]\n\n"
