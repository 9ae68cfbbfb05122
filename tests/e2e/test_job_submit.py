"""`ray job submit` for real: a local Ray head with its dashboard, the reduced demo as a job.

Ray 2.60 turns token authentication on for local clusters. The test runs the head with a
token of its own (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``) and hands it to each client the
way a user would: the environment of the CLI commands, a bearer header for the Python client.

The head is ``ray start --head --block`` in a child process with its own ports (the
integration tests' session cluster may be running beside it); terminating that process stops
every Ray process it started, so the head goes away without ``ray stop``, which would kill
other clusters on the machine too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from selfevo.config import load_config
from tests.conftest import REQUIRE_VLLM

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = str(Path(sys.executable).parent)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


TOKEN = secrets.token_hex(16)


def _env() -> dict[str, str]:
    # The job runs `selfevo` from this interpreter's environment, as a cluster image would.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)
    # No Serve traffic to drain: without this, stopping the head waits out Ray's 30 s drain.
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    return env


def _wait_for_dashboard(url: str, head: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}")
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2).close()
            return
        except urllib.error.HTTPError:  # 401: up, and asking for Ray's auth token
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"the dashboard at {url} did not come up in {timeout_s:.0f}s")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    pytest.importorskip("ray")
    gcs, dashboard, agent, agent_grpc, metrics, env_agent, client = _free_ports(7)
    # Short: Ray's socket paths under it must fit AF_UNIX's 107 bytes, which pytest's own
    # temporary folders (deeper still under pytest-xdist) can overflow.
    temp_dir = tempfile.mkdtemp(prefix="ray-head-", dir="/tmp")
    command = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
        f"--port={gcs}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={env_agent}", f"--ray-client-server-port={client}",
        "--num-cpus=2", "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    log = (tmp_path_factory.mktemp("head-log") / "head.log").open("w")
    head = subprocess.Popen(command, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_dashboard(url, head)
        yield url
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _job_status(url: str, job_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(url, headers={"Authorization": f"Bearer {TOKEN}"})
    return client.get_job_status(job_id).value


def _engine_backend() -> list[str]:
    """vLLM engines where vLLM is installed (the cluster's set-up), else the HF engine."""
    from actors.engine_vllm import vllm_available

    if vllm_available() or REQUIRE_VLLM:
        # One vLLM engine: each CPU engine holds its own KV cache and engine-core process.
        return ["engine.backend=vllm", "engine.enforce_eager=true", "engine.num_engines=1"]
    return ["engine.backend=hf"]


def test_ray_job_submit_runs_the_reduced_demo(ray_head, tmp_path, reduced_demo):
    """The reduced demo as a job, on vLLM engines where vLLM is installed: the whole SELF
    round on the cluster's stack, the weights handed from the trainer to the engines."""
    job_id = f"selfevo-e2e-{os.getpid()}"
    backend = _engine_backend()
    overrides = [*reduced_demo, *backend, f"run.output_dir={tmp_path}", "run.name=job"]
    submit = [
        sys.executable, "-m", "ray.scripts.scripts", "job", "submit",
        f"--address={ray_head}", "--working-dir=.", "--runtime-env=launch/runtime_env.yaml",
        f"--submission-id={job_id}", "--", "selfevo", "run", "demo", *overrides,
    ]  # fmt: skip
    done = subprocess.run(submit, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert _job_status(ray_head, job_id) == "SUCCEEDED", output[-4000:]
    assert "kept/generated" in output  # the run's table, streamed back from the job
    # The console holds selfevo's lines once each, and nothing the workers printed.
    ours = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert any(line.startswith("[round1.train] done") for line in ours), output[-4000:]
    assert len(ours) == len(set(ours)), [line for line in ours if ours.count(line) > 1]
    for noise in ("pid=", "core_worker", "DeepSpeed", "FutureWarning", "Loading weights"):
        assert noise not in done.stdout, noise

    run_dir = tmp_path / "job"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {step["status"] for step in manifest["steps"]} == {"done"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [entry["round"] for entry in summary["rounds"]] == [0, 1]
    assert summary["rounds"][1]["generated"] == 48
    assert all(0.0 <= entry["direct_acc"] <= 1.0 for entry in summary["rounds"])
    assert (run_dir / "round1/model/hf/model.safetensors").is_file()
    handoff = next(s for s in manifest["steps"] if s["name"] == "round1.handoff")
    assert handoff["metrics"]["backends"] == [backend[0].split("=")[1]]
    engines = load_config("demo", overrides).engine.num_engines
    assert handoff["metrics"]["engines_awake"] == handoff["metrics"]["engines"] == engines


def test_submit_helper_follows_a_failed_job_and_exits_1(ray_head, tmp_path):
    missing = tmp_path / "no-such-prompts.jsonl"
    helper = [
        sys.executable, "-m", "launch.submit", "--address", ray_head,
        "demo", f"data.prompt_pool={missing}",
    ]  # fmt: skip
    done = subprocess.run(helper, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert str(missing) in done.stdout  # the job's own error, followed from its log
    assert "FAILED" in done.stderr


def test_submit_helper_refuses_a_bad_config_before_uploading(tmp_path):
    helper = [sys.executable, "-m", "launch.submit", "--address", "http://127.0.0.1:9", "demo"]
    done = subprocess.run(
        [*helper, "train.epochs=zero"], cwd=ROOT, env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "train.epochs" in done.stderr and "submitted" not in done.stderr
