"""Meta-skill labelers: who writes the feedback, verdict and refinement of round 0.

SELF's meta-skill corpus comes from a stronger labeler. :class:`OpenAILabeler` asks any
OpenAI-compatible chat endpoint (``recipe.labeler.base_url`` / ``model``; the key comes from
the environment variable named by ``recipe.labeler.api_key_env`` and is never logged or
written). It retries 429s, 5xx answers and timeouts with exponential backoff (honouring
``Retry-After``), labels records concurrently, and turns a record it finally cannot label into
a rejected record with the reason, so a flaky endpoint costs rows, never the run.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from selfevo.parsers import parse_judgement
from selfevo.records import INCORRECT, Message, Record, Reject
from selfevo.stages import feedback_prompt, refine_prompt

RETRY_STATUS = {429, 500, 502, 503, 504}


class LabelerError(RuntimeError):
    """A request the labeler gave up on; the message is safe to store (no key in it)."""


class OpenAIChatClient:
    """A minimal client for ``POST {base_url}/chat/completions`` with retries."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = os.environ.get(api_key_env)
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.session = requests.Session()
        self.retries = 0

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIChatClient(url={self.url!r}, model={self.model!r})"

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff_s * 2**attempt * (0.5 + random.random())
        if retry_after:
            with contextlib.suppress(ValueError):
                delay = float(retry_after)
        time.sleep(min(delay, self.max_backoff_s))

    def chat(
        self, messages: list[Message], max_tokens: int = 1024, temperature: float = 0.0
    ) -> str:
        """The assistant's reply text. Raises LabelerError once retries are spent."""
        payload = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        problem = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.retries += 1
            try:
                response = self.session.post(
                    self.url, json=payload, headers=headers, timeout=self.timeout_s
                )
            except requests.Timeout:
                problem = f"timed out after {self.timeout_s:g}s"
                self._wait(attempt, None)
                continue
            except requests.ConnectionError as exc:
                problem = f"connection failed ({type(exc).__name__})"
                self._wait(attempt, None)
                continue
            if response.status_code in RETRY_STATUS:
                problem = f"HTTP {response.status_code}"
                self._wait(attempt, response.headers.get("Retry-After"))
                continue
            if response.status_code >= 400:
                raise LabelerError(f"HTTP {response.status_code}: {response.text[:200]}")
            try:
                return response.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise LabelerError(f"malformed reply: {response.text[:200]}") from None
        raise LabelerError(f"gave up after {self.max_retries + 1} attempts; last: {problem}")


class OpenAILabeler:
    """Writes feedback with a verdict for each record, and a refinement where it is incorrect."""

    def __init__(
        self, client: OpenAIChatClient, template_set: str = "default", concurrency: int = 8
    ):
        self.client, self.template_set, self.concurrency = client, template_set, concurrency

    @classmethod
    def from_config(cls, labeler: Any, template_set: str = "default") -> OpenAILabeler:
        client = OpenAIChatClient(
            labeler.base_url,
            labeler.model,
            labeler.api_key_env,
            labeler.timeout_s,
            labeler.max_retries,
        )
        return cls(client, template_set, labeler.concurrency)

    def label(self, records: list[Record]) -> list[Record]:
        """Label every record in place; each ends kept or rejected with the reason."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            list(pool.map(self._label_one, records))
        return records

    def _label_one(self, record: Record) -> None:
        try:
            response = record.response or ""
            feedback = self.client.chat(feedback_prompt(record, response, self.template_set))
            verdict = parse_judgement(feedback)
            record.feedback, record.judgement = feedback, verdict.judgement
            if verdict.judgement is None:
                record.reject(Reject.NO_JUDGEMENT, f"labeler: {verdict.reason}")
                return
            if verdict.judgement == INCORRECT:
                record.refined_response = self.client.chat(
                    refine_prompt(record, response, feedback, self.template_set)
                )
            record.keep(record.refined_response or record.response or "")
        except LabelerError as exc:
            record.reject(Reject.LABELER_ERROR, str(exc))
