"""`selfevo bench serve` at CI size, on HF and on vLLM engines: one report with both rates,
the latencies, and the served text equal to the pool's offline text (the speed goal itself
is measured by the bench)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray")
pytest.importorskip("openai")

from actors.engine_vllm import vllm_available
from selfevo.cli import main
from tests.conftest import REQUIRE_VLLM

pytestmark = pytest.mark.integration
needs_vllm = pytest.mark.skipif(
    not vllm_available() and not REQUIRE_VLLM, reason="vLLM is not installed"
)


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=needs_vllm)])
def test_bench_serve_reports_rates_latency_and_identical_text(ray_cluster, capsys, backend):
    argv = ["bench", "serve", "--json", "--prompts", "64", "--clients", "8"]
    assert main([*argv, "--max-new-tokens", "8", "--backend", backend]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == backend and report["outputs_identical"] is True
    assert report["offline_tokens_per_s"] > 0 and report["served_tokens_per_s"] > 0
    ratio = report["served_tokens_per_s"] / report["offline_tokens_per_s"]
    assert report["served_over_offline"] == pytest.approx(ratio, abs=2e-3)
    assert 0 < report["p50_latency_s"] <= report["p95_latency_s"]
