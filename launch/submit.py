"""Submit a selfevo config to a Ray cluster as a job and follow it to the end.

    python -m launch.submit --address http://HEAD:8265 recipes/self_math scale/llama3_8b_1x8 \\
        run.output_dir=/mnt/selfevo/runs

is ``ray job submit --working-dir . --runtime-env launch/runtime_env.yaml -- selfevo run ...``
with three things the plain CLI does not do: the config and its overrides are validated here
before anything is uploaded (a typo fails in a second, not after the upload and the job's
start); keys cannot ride along in the runtime env (``--env`` refuses names that look secret);
and the exit status is the job's (0 only for SUCCEEDED), so scripts and CI can rely on it.
``--pip`` adds selfevo's requirements from pyproject.toml for clusters on a stock
``rayproject/ray`` image. Ctrl-C stops the job, not just the log stream.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
import sys
import time
from importlib.metadata import requires
from pathlib import Path
from typing import Any

import yaml

from selfevo.config import ConfigError, load_config, split_configs_and_overrides

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_ENV = ROOT / "launch" / "runtime_env.yaml"
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
# Already in every rayproject/ray image (and pinned to the cluster's own build there).
_IN_RAY_IMAGE = ("ray", "torch")


def job_entrypoint(configs: list[str], overrides: list[str]) -> str:
    return shlex.join(["selfevo", "run", *configs, *overrides])


def requirements() -> list[str]:
    """selfevo's dependencies (from its installed metadata), less those a Ray image has."""
    deps = [d for d in requires("selfevo") or [] if "extra ==" not in d]
    return [d for d in deps if re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0] not in _IN_RAY_IMAGE]


def build_runtime_env(
    working_dir: str | Path = ROOT, env: dict[str, str] | None = None, pip: bool = False
) -> dict[str, Any]:
    """launch/runtime_env.yaml with ``working_dir`` set, extra env vars, and optionally pip."""
    runtime_env = yaml.safe_load(RUNTIME_ENV.read_text())
    runtime_env["working_dir"] = str(working_dir)
    for name, value in (env or {}).items():
        if SECRET_NAME.search(name):
            raise ValueError(
                f"--env {name}: looks like a secret; a runtime env is stored with the job and "
                "shown by the dashboard. Give the cluster the key instead (k8s: a Secret as "
                "an environment variable; a VM head: export it before `ray start`)."
            )
        runtime_env.setdefault("env_vars", {})[name] = value
    if pip:
        runtime_env["pip"] = requirements()
    return runtime_env


async def _follow(client: Any, job_id: str, out: Any) -> None:
    async for lines in client.tail_job_logs(job_id):
        out.write(lines)
        out.flush()


def submit(
    address: str,
    configs: list[str],
    overrides: list[str],
    *,
    env: dict[str, str] | None = None,
    pip: bool = False,
    follow: bool = True,
    out: Any = sys.stdout,
) -> tuple[str, str]:
    """Submit ``selfevo run configs overrides``; return (job id, final or current status)."""
    from ray.job_submission import JobSubmissionClient

    load_config(configs, overrides)  # fail here, not on the cluster
    client = JobSubmissionClient(address)
    job_id = client.submit_job(
        entrypoint=job_entrypoint(configs, overrides),
        runtime_env=build_runtime_env(ROOT, env, pip),
        metadata={"selfevo_config": " ".join(configs)},
    )
    print(f"submitted {job_id} to {address}", file=sys.stderr, flush=True)
    if not follow:
        return job_id, client.get_job_status(job_id).value
    try:
        asyncio.run(_follow(client, job_id, out))
        while not (status := client.get_job_status(job_id)).is_terminal():
            time.sleep(1.0)  # the log stream can end a moment before the status settles
    except KeyboardInterrupt:
        client.stop_job(job_id)
        print(f"stopped {job_id}", file=sys.stderr)
        raise
    return job_id, status.value


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--env {pair!r}: expected NAME=VALUE")
        env[name] = value
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.submit", description=__doc__)
    parser.add_argument("--address", required=True, help="the dashboard, http://HEAD:8265")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE (no secrets)")
    parser.add_argument("--pip", action="store_true", help="install selfevo's requirements")
    parser.add_argument("--no-follow", action="store_true", help="submit and return")
    parser.add_argument(
        "words",
        nargs="+",
        metavar="CONFIG|key=value",
        help="configs merged in order (a recipe, then a scale preset), then key=value overrides",
    )
    args = parser.parse_args(argv)
    try:
        env = _parse_env(args.env)
        configs, overrides = split_configs_and_overrides(args.words)
        if not configs:
            raise ConfigError("name a config to run (e.g. recipes/self_math scale/llama3_8b_1x8)")
        job_id, status = submit(
            args.address,
            configs,
            overrides,
            env=env,
            pip=args.pip,
            follow=not args.no_follow,
        )
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{job_id}: {status}", file=sys.stderr)
    return 0 if args.no_follow or status == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())
