"""What the command groups share: config arguments, and keeping stdout for results."""

from __future__ import annotations

import argparse
import contextlib
import sys

from selfevo.config import DEFAULT_CONFIG, load_config, split_configs_and_overrides


def add_config_arguments(parser: argparse.ArgumentParser, example: str = "recipe.rounds=3"):
    """The positional ``[CONFIG ...] [key=value ...]`` every config-taking command has."""
    parser.add_argument(
        "words",
        nargs="*",
        metavar="CONFIG|key=value",
        help=f"configs (YAML paths or names under conf/, merged in order; default "
        f"{DEFAULT_CONFIG}), then key=value overrides, e.g. {example}",
    )


def configs_and_overrides(words: list[str]) -> tuple[list[str], list[str]]:
    """``selfevo run train.epochs=3`` means the default config with one override."""
    configs, overrides = split_configs_and_overrides(words)
    return configs or [DEFAULT_CONFIG], overrides


def config_of(args: argparse.Namespace):
    """The resolved config of a command's configs and overrides."""
    return load_config(*configs_and_overrides(args.words))


def stderr_for_libraries():
    """Libraries print to stdout (DeepSpeed's accelerator notice); stdout is for the result."""
    return contextlib.redirect_stdout(sys.stderr)


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
