"""The ``selfevo`` command line, one module per command group:

- :mod:`~selfevo.cli.run`: ``run``, ``ablate``, ``config show``, ``report``, ``plan``
- :mod:`~selfevo.cli.models`: ``generate``, ``refine``, ``eval``, ``judge``, ``train``
- :mod:`~selfevo.cli.data`: ``data check``, ``score``
- :mod:`~selfevo.cli.bench`: ``bench generate``, ``bench train``
- :mod:`~selfevo.cli.serve`: ``serve``
- tasks' own groups (:data:`selfevo.tasks.COMMAND_GROUPS`): ``demo seed``

Every command that takes a config takes it the same way: ``[CONFIG] [key=value ...]``.
Exit codes: 0 success, 1 the input has problems (bad rows), 2 bad usage or config. Heavy
work (engines, training) is imported inside the command that needs it, so ``selfevo --help``
and the pure commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from selfevo import __version__
from selfevo.cli import bench, data, models, run, serve
from selfevo.config import ConfigError
from selfevo.manifest import ConfigChanged, PlanChanged
from selfevo.readers import DataError
from selfevo.tasks import COMMAND_GROUPS

GROUPS = (run, models, data, bench, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfevo",
        description="Self-evolution of language models on Ray: SELF, I-SHEEP, mistake analysis.",
    )
    parser.add_argument("--version", action="version", version=f"selfevo {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.register(commands)
    for name in COMMAND_GROUPS:  # what tasks add (the demo world's ``demo`` group)
        importlib.import_module(name).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ConfigError, ConfigChanged, PlanChanged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main"]
