"""``selfevo demo seed``: train a demo world's seed model from scratch (a CLI command group
the demo worlds register through :data:`selfevo.tasks.COMMAND_GROUPS`). The worlds are the
registry's built-in models that name a seed trainer."""

from __future__ import annotations

import argparse
import importlib
import json

from selfevo.cli.common import progress, stderr_for_libraries
from selfevo.tasks import BUILTIN_MODELS, BuiltinModel


def _worlds() -> dict[str, BuiltinModel]:
    return {m.world: m for m in BUILTIN_MODELS.values() if m.world and m.trainer}


def register(commands) -> None:
    demo = commands.add_parser("demo", help="the embedded demo worlds")
    actions = demo.add_subparsers(dest="demo_command", metavar="ACTION", required=True)
    seed = actions.add_parser("seed", help="train a demo world's seed model from scratch")
    seed.add_argument("--output", required=True, help="directory for the checkpoint")
    worlds = sorted(_worlds())
    seed.add_argument("--world", choices=worlds, default="division", help="the demo world")
    seed.add_argument("--steps", type=int, help="at most this many steps (the world's default)")
    seed.add_argument(
        "--target-acc", type=float, help="stop at this held-out accuracy (the world's default)"
    )
    seed.add_argument("--problems", type=int, help="training problems (the world's default)")
    seed.add_argument("--seed", type=int, default=0)
    seed.set_defaults(func=cmd_demo_seed)


def cmd_demo_seed(args: argparse.Namespace) -> int:
    chosen = {"problems": args.problems, "target_acc": args.target_acc, "steps": args.steps}
    options = {key: value for key, value in chosen.items() if value is not None}
    with stderr_for_libraries():
        trainer = importlib.import_module(_worlds()[args.world].trainer)
        info = trainer.train_seed(args.output, seed=args.seed, emit=progress, **options)
    print(json.dumps(info, indent=2))
    return 0
