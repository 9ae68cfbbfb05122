"""What the command groups share: config arguments, and keeping stdout for results."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from selfevo.config import DEFAULT_CONFIG, load_config


def add_config_arguments(parser: argparse.ArgumentParser, example: str = "recipe.rounds=3"):
    """The positional ``[CONFIG] [key=value ...]`` every config-taking command has."""
    parser.add_argument(
        "config", nargs="?", help=f"YAML path or name under conf/ ({DEFAULT_CONFIG})"
    )
    parser.add_argument("overrides", nargs="*", help=f"key=value overrides, e.g. {example}")


def split_config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str, list[str]]:
    """``selfevo run train.epochs=3`` means the default config with one override."""
    if config is not None and "=" in config and not Path(config).exists():
        return DEFAULT_CONFIG, [config, *overrides]
    return config or DEFAULT_CONFIG, overrides


def config_of(args: argparse.Namespace):
    """The resolved config of a command's positional config and overrides."""
    return load_config(*split_config_and_overrides(args.config, args.overrides))


def stderr_for_libraries():
    """Libraries print to stdout (DeepSpeed's accelerator notice); stdout is for the result."""
    return contextlib.redirect_stdout(sys.stderr)


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
