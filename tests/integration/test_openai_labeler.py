"""The OpenAI-compatible labeler against a real local HTTP server that misbehaves on purpose."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler

import http_stub
import pytest
from http_stub import chat_reply, reply_json

from actors.labelers import LabelerError, OpenAIChatClient, OpenAILabeler
from selfevo.records import KEPT, REJECTED, Message, Record

SECRET = "sk-test-0123456789"


class _Script:
    """Per-test behaviour: a queue of faults, then answers from the request's content."""

    def __init__(self, faults: list[str]):
        self.faults = list(faults)
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.auth: set[str] = set()


def _handler(script: _Script):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            content = body["messages"][-1]["content"]
            with script.lock:
                script.requests.append(body)
                script.auth.add(self.headers.get("Authorization", ""))
                fault = script.faults.pop(0) if script.faults else None
            if "ALWAYS-500" in content:
                fault = "500"
            if fault == "429":
                return reply_json(self, 429, {"error": "slow down"}, {"Retry-After": "0"})
            if fault == "500":
                return reply_json(self, 500, {"error": "boom"})
            if fault == "stall":
                time.sleep(1.5)
            if fault == "garbage":
                return reply_json(self, 200, "not json")
            if "Review of the earlier" in content or "Earlier solution" in content:
                text = "Fixed: the answer is 5."
            elif "wrong" in content:
                text = "Step 1 adds wrongly.\nJudgement: incorrect"
            else:
                text = "Each step checks out.\nJudgement: correct"
            return reply_json(self, 200, chat_reply(text))

    return Handler


@pytest.fixture
def server():
    scripts = []

    def start(faults):
        script = _Script(faults)
        httpd, url = http_stub.start(_handler(script))
        scripts.append(httpd)
        return url, script

    yield start
    for httpd in scripts:
        httpd.shutdown()


def _client(url, monkeypatch, **kwargs):
    monkeypatch.setenv("SELFEVO_TEST_KEY", SECRET)
    defaults = {"timeout_s": 0.5, "max_retries": 3, "backoff_s": 0.01, "max_backoff_s": 0.05}
    return OpenAIChatClient(url, "judge-model", "SELFEVO_TEST_KEY", **{**defaults, **kwargs})


def test_retries_429_500_and_a_stall_then_succeeds(server, monkeypatch):
    url, script = server(["429", "500", "stall"])
    client = _client(url, monkeypatch)
    reply = client.chat([Message("user", "Proposed solution: 2+3=5")])
    assert reply.endswith("Judgement: correct")
    assert client.retries == 3 and len(script.requests) == 4
    assert script.auth == {f"Bearer {SECRET}"}
    assert script.requests[0]["model"] == "judge-model"


def test_gives_up_with_a_reason_and_no_key(server, monkeypatch):
    url, _ = server([])
    client = _client(url, monkeypatch, max_retries=2)
    with pytest.raises(LabelerError) as error:
        client.chat([Message("user", "ALWAYS-500")])
    assert "3 attempts" in str(error.value) and "HTTP 500" in str(error.value)
    assert SECRET not in str(error.value) and SECRET not in repr(client)


def test_malformed_reply_is_an_error(server, monkeypatch):
    url, _ = server(["garbage"])
    with pytest.raises(LabelerError, match="malformed reply"):
        _client(url, monkeypatch).chat([Message("user", "x")])


def test_labeler_completes_and_records_failures(server, monkeypatch):
    url, script = server(["429", "500", "stall", "429"])
    labeler = OpenAILabeler(_client(url, monkeypatch), concurrency=4)
    records = [
        Record(
            id="ok", prompt_id="ok", prompt="2+3?", task="math", response="2+3=5. The answer is 5."
        ),
        Record(id="bad", prompt_id="bad", prompt="2+3?", task="math", response="wrong: 2+3=6"),
        Record(id="down", prompt_id="down", prompt="ALWAYS-500", task="math", response="5"),
    ]
    labeler.label(records)
    ok, bad, down = records
    assert (ok.status, ok.judgement, ok.final_response) == (KEPT, "correct", ok.response)
    assert (bad.status, bad.judgement) == (KEPT, "incorrect")
    assert bad.refined_response == "Fixed: the answer is 5." == bad.final_response
    assert down.status == REJECTED and down.reject_reason.startswith("labeler_error: gave up")
    assert all(SECRET not in (r.reject_reason or "") for r in records)
    # ok: 1 call, bad: feedback + refinement, down: 1 + 3 retries; each fault was met and retried.
    assert not script.faults and len(script.requests) >= 1 + 2 + 4
