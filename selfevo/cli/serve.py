"""``selfevo serve``: a run's models, or one model, behind an OpenAI-compatible endpoint."""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path

from selfevo.cli.common import (
    add_config_arguments,
    configs_and_overrides,
    progress,
    stderr_for_libraries,
)
from selfevo.config import SelfEvoConfig, load_config, split_configs_and_overrides

TARGET_HELP = (
    "a run directory (serves round0..roundN and best; its config.yaml is the base config) "
    "or a model: checkpoint dir or hub name, served under that name"
)


def register(commands) -> None:
    parser = commands.add_parser(
        "serve", help="serve a run's models (or one model) over the OpenAI chat API"
    )
    parser.add_argument("target", metavar="RUN_DIR|MODEL", help=TARGET_HELP)
    add_config_arguments(parser, "serve.port=8000")
    parser.set_defaults(func=cmd_serve)


def served_models(target: str, words: list[str]) -> tuple[SelfEvoConfig, dict[str, str]]:
    """The config and the served names -> checkpoints, for a run directory or one model."""
    from selfevo.serving import pick_models, run_models
    from selfevo.tasks import resolve_model

    run_config = Path(target) / "config.yaml"
    if (Path(target) / "manifest.json").is_file() and run_config.is_file():
        configs, overrides = split_configs_and_overrides(words)
        config = load_config([str(run_config), *configs], overrides)
        models = run_models(target, resolve_model(config.model.name_or_path))
        return config, pick_models(models, list(config.serve.models))
    config = load_config(*configs_and_overrides(words))
    return config, {target: resolve_model(target)}


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM (a Kubernetes pod's stop), then stop engines and Serve."""
    config, models = served_models(args.target, args.words)
    with stderr_for_libraries():
        from actors.runtime import init_ray
        from actors.serve import start_serving, take_api_key

        key = take_api_key(config)  # before Ray starts: its processes inherit the environment
        init_ray(config.cluster, quiet=True)
        signal.signal(signal.SIGTERM, _interrupt)  # after Ray's own, which would just exit
        try:
            served = start_serving(config, models, key, emit=progress)
        except KeyboardInterrupt:
            progress("[serve] stopped while starting")
            return 0
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        progress("[serve] stopping")
    finally:
        served.stop()
    return 0
