"""``selfevo serve``: evolved models behind an OpenAI-compatible endpoint, on Ray Serve.

The driver (the ``selfevo serve`` process) starts one engine pool per distinct model and
owns it; a Ray Serve deployment (:class:`ChatApi`, a FastAPI ingress) takes the requests and
calls the pools' routers. Each request runs the same stages as ``selfevo refine`` and
``selfevo eval`` (:func:`actors.pipeline.run_stage` with :func:`selfevo.stages.self_chain`),
so an answer here equals theirs for the same prompt and settings; concurrent requests meet in
the engines' batches, and the router replaces an engine that dies mid-request and retries.
Request checking, model names and modes, and the response bodies are
:mod:`selfevo.serving`'s.

The API key (``serve.api_key_env``) stays in the driver: the deployment gets its SHA-256
digest and compares digests, so the key reaches no Ray object, log or file.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

# At module level: FastAPI reads the endpoints' annotations (``Request``) from these globals.
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from actors.evaluate import REFINE_STAGES, generation_params
from actors.pipeline import run_stage
from selfevo.config import SelfEvoConfig
from selfevo.evaluation import majority_answer
from selfevo.generation import GenerationParams
from selfevo.parsers import extract_answer, format_number
from selfevo.records import Record, Reject
from selfevo.serving import (
    REFINE,
    REFINE_SC,
    SC,
    ChatRequest,
    Choice,
    ConcurrencyLimit,
    RequestError,
    ServeLimits,
    completion_body,
    completion_id,
    parse_chat_request,
    stream_chunks,
)
from selfevo.stages import GENERATE, expand_samples, refined_answer, self_chain

PROMPT_ID = "prompt"  # one prompt per request: fixed ids keep a seeded request repeatable


class _CountingRouter:
    """A pool's router as :func:`run_stage` calls it, counting one request's tokens."""

    def __init__(self, router: Any):
        self.router = router
        self.prompt_tokens = self.completion_tokens = 0
        self.generate = SimpleNamespace(remote=self._generate)

    async def _generate(self, prompts: list, params: GenerationParams) -> list:
        import ray

        call = self.router.generate.remote(prompts, params)
        try:
            completions = await call
        except asyncio.CancelledError:  # the client went away: stop the engines' work too
            ray.cancel(call)
            raise
        for outputs in completions:
            self.prompt_tokens += outputs[0].prompt_tokens
            self.completion_tokens += sum(c.output_tokens for c in outputs)
        return completions

    def usage(self) -> dict[str, int]:
        total = self.prompt_tokens + self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": total,
        }


@dataclass(frozen=True)
class AnswerSettings:
    """What every request shares: the config's sampling, critique and refine-answer policy."""

    params: GenerationParams
    feedback_params: GenerationParams
    sc_temperature: float
    judge_by: str
    refine_answer: str
    template_set: str
    task: str | None

    @classmethod
    def from_config(cls, config: SelfEvoConfig) -> AnswerSettings:
        params, feedback_params = generation_params(config)
        return cls(
            params,
            feedback_params,
            config.eval.sc_temperature,
            config.recipe.judge_by.value,
            config.eval.refine_answer.value,
            config.recipe.template_set,
            config.recipe.task,
        )


def _request_params(request: ChatRequest, settings: AnswerSettings) -> GenerationParams:
    """The answer's sampling: ``selfevo refine``'s rules (one greedy sample; several sampled,
    at ``eval.sc_temperature`` when the config is greedy), then the request's own fields."""
    params = settings.params
    if request.n == 1:
        params = params.with_(temperature=0.0)
    elif params.greedy:
        params = params.with_(temperature=settings.sc_temperature)
    changes = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_new_tokens": request.max_tokens,
    }
    # Seeded only when the request says so (OpenAI's meaning); unseeded requests also share
    # the HF engine's batches, which seeded sampled ones cannot.
    params = params.with_(seed=request.seed, **{k: v for k, v in changes.items() if v is not None})
    return params.with_(stop=request.stop) if request.stop else params


def _prompt_record(request: ChatRequest, task: str | None) -> Record:
    """A one-message request is a plain prompt, as a prompt file's line would be."""
    messages = request.messages
    if len(messages) == 1:
        return Record(id=PROMPT_ID, prompt_id=PROMPT_ID, prompt=messages[0].content, task=task)
    return Record(id=PROMPT_ID, prompt_id=PROMPT_ID, messages=list(messages), task=task)


async def answer(
    request: ChatRequest, router: Any, settings: AnswerSettings
) -> tuple[list[Choice], dict[str, int], list[dict[str, Any]]]:
    """Run a request's mode on the pool: (choices, token usage, per-sample critique trace)."""
    refining = request.mode in (REFINE, REFINE_SC)
    chain = (
        self_chain(request.refine_steps, REFINE_STAGES, False, settings.judge_by)
        if refining
        else self_chain(0, [GENERATE], with_filter=False)
    )
    rows = expand_samples([_prompt_record(request, settings.task)], request.n)
    counting = _CountingRouter(router)
    params = _request_params(request, settings)
    for stage in chain:
        stage_params = settings.feedback_params if stage.feedback else params
        await run_stage(stage, rows, counting, stage_params, settings.template_set)
    failed = [r for r in rows if (r.reject_reason or "").startswith(Reject.ENGINE_ERROR)]
    if failed:  # the detail (actor ids, addresses) goes to the server's log, not the client
        print(f"[serve] engines failed a request: {failed[0].reject_reason}", flush=True)
        raise RequestError("the engines failed to answer; retry shortly", None, 503)
    texts = [
        (refined_answer(r, settings.refine_answer) if refining else r.response) or "" for r in rows
    ]
    choices = [Choice(text, _finish_reason(row)) for text, row in zip(texts, rows, strict=True)]
    if request.mode in (SC, REFINE_SC):
        voted = majority_answer(texts)
        choices = [Choice(f"The answer is {voted}." if voted is not None else texts[0])]
    trace = []
    if refining or request.mode == SC:
        trace = [_trace(r, text) for r, text in zip(rows, texts, strict=True)]
    return choices, counting.usage(), trace


def _finish_reason(record: Record) -> str:
    return "length" if (record.reject_reason or "").startswith(Reject.TRUNCATED) else "stop"


def _trace(record: Record, final: str) -> dict[str, Any]:
    """One sample's self-refinement: answer, critique, verdict, refinements, final answer."""
    answer = extract_answer(final).value
    return {
        "response": record.response,
        "feedback": record.feedback,
        "judgement": record.judgement,
        "refined_response": record.refined_response,
        "refined_feedback": record.refined_feedback,
        "refined_judgement": record.refined_judgement,
        "refinements": int(record.meta.get("refinements", "0")),
        "answer": format_number(answer) if answer is not None else None,
    }


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def chat_completion(
    raw_body: bytes,
    routers: dict[str, Any],
    limits: ServeLimits,
    settings: AnswerSettings,
    concurrency: ConcurrencyLimit,
) -> tuple[int, Any, dict[str, bool] | None]:
    """A ``/v1/chat/completions`` call: (HTTP status, body, and for a streamed reply the
    arguments of :func:`stream_chunks`, else None)."""
    try:
        try:
            body = json.loads(raw_body)
        except ValueError as exc:
            raise RequestError(f"the body is not valid JSON: {exc}") from None
        request = parse_chat_request(body, routers, limits)
        concurrency.enter()
        try:
            choices, usage, trace = await answer(request, routers[request.model], settings)
        finally:
            concurrency.leave()
    except RequestError as error:
        return error.status, error.body(), None
    result = completion_body(completion_id(), request.requested_name, choices, usage, trace)
    return 200, result, {"include_usage": request.include_usage} if request.stream else None


def _authorising(key_sha256: str | None):
    """FastAPI middleware: with a key set, a request without it (but /health) gets 401."""

    async def authorise(request: Any, call_next: Any) -> Any:
        if key_sha256 and request.url.path != "/health":
            given = request.headers.get("authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(key_digest(given), key_sha256):
                error = RequestError("a valid API key is required", None, 401)
                return JSONResponse(error.body(), status_code=401)
        return await call_next(request)

    return authorise


def build_app(routers: dict[str, Any], config: SelfEvoConfig, key_sha256: str | None) -> Any:
    """The Ray Serve application: ``routers`` maps each served name to its pool's router."""
    from ray import serve

    app = FastAPI(title="selfevo serve")
    app.middleware("http")(_authorising(key_sha256))
    cfg = config.serve
    limits = ServeLimits(cfg.max_prompt_chars, cfg.max_tokens, cfg.max_n, cfg.refine_steps)
    settings = AnswerSettings.from_config(config)

    # Serve lets a few more in than the limit, so that one over it gets our clear 429.
    @serve.deployment(
        max_ongoing_requests=cfg.max_concurrent_requests + 64, ray_actor_options={"num_cpus": 0}
    )
    @serve.ingress(app)
    class ChatApi:
        def __init__(self, routers: dict[str, Any]):
            self.routers, self.created = routers, int(time.time())
            self.concurrency = ConcurrencyLimit(cfg.max_concurrent_requests)

        @app.get("/health")
        async def health(self) -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/v1/models")
        async def models(self) -> dict[str, Any]:
            return {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": self.created, "owned_by": "selfevo"}
                    for name in self.routers
                ],
            }

        @app.post("/v1/chat/completions")
        async def chat(self, http: Request) -> Any:
            status, body, stream = await chat_completion(
                await http.body(), self.routers, limits, settings, self.concurrency
            )
            if stream is not None:
                chunks = stream_chunks(body, **stream)
                return StreamingResponse(chunks, media_type="text/event-stream")
            return JSONResponse(body, status_code=status)

    return ChatApi.bind(routers)


@dataclass
class Served:
    """A running ``selfevo serve``: its URL, each served name's checkpoint and router."""

    url: str
    models: dict[str, str]
    routers: dict[str, Any]
    pools: list[Any]

    def stop(self) -> None:
        import contextlib

        from ray import serve

        with contextlib.suppress(Exception):  # stopping what may have half-started
            serve.shutdown()
        for pool in self.pools:
            with contextlib.suppress(Exception):  # one dead router must not strand the rest
                pool.shutdown()


def take_api_key(config: SelfEvoConfig) -> str | None:
    """The API key from ``serve.api_key_env``, removed from this process's environment before
    Ray starts, so that no Ray process (raylet, engines, Serve) inherits it."""
    import os

    return os.environ.pop(config.serve.api_key_env, None) if config.serve.api_key_env else None


def start_serving(
    config: SelfEvoConfig, models: dict[str, str], api_key: str | None = None, emit=print
) -> Served:
    """Start an engine pool per distinct model, then the Serve application over them;
    ``api_key`` (see :func:`take_api_key`), when given, is required of every request.

    Interrupted part-way (a failure, Ctrl-C, SIGTERM), it stops what it had started."""
    from ray import serve

    from actors.runtime import init_ray

    init_ray(config.cluster, quiet=True)
    key = api_key or None
    pools: dict[str, Any] = {}
    try:
        _start_pools(config, models, pools, emit)
        routers = {name: pools[path].router for name, path in models.items()}
        host, port = config.serve.host, config.serve.port
        serve.start(http_options={"host": host, "port": port})
        app = build_app(routers, config, key_digest(key) if key else None)
        serve.run(app, name="selfevo", route_prefix="/", blocking=False)
    except BaseException:
        Served("", models, {}, list(pools.values())).stop()
        raise
    url = f"http://{host}:{port}/v1"
    emit(
        f"[serve] {url} serves {', '.join(models)} (add +refine, +sc or +refine+sc to a name)"
        + ("; an API key is required" if key else "")
    )
    return Served(url, models, routers, list(pools.values()))


def _start_pools(
    config: SelfEvoConfig, models: dict[str, str], pools: dict[str, Any], emit
) -> None:
    """One pool per distinct checkpoint (``best`` shares its round's), into ``pools``."""
    from actors.models import full_weights
    from actors.pool import EnginePool

    for name, path in models.items():
        if path not in pools:
            emit(f"[serve] starting {config.engine.num_engines} engine(s) for {name}: {path}")
            pools[path] = EnginePool.from_config(
                config, full_weights(path), name=f"selfevo-serve:{name}"
            )
    for pool in pools.values():
        pool.wait_ready()
