"""``selfevo demo seed``: train the demo world's seed model from scratch (a CLI command group
the demo world registers through :data:`selfevo.tasks.COMMAND_GROUPS`)."""

from __future__ import annotations

import argparse
import json

from selfevo.cli.common import progress, stderr_for_libraries


def register(commands) -> None:
    demo = commands.add_parser("demo", help="the embedded demo world")
    actions = demo.add_subparsers(dest="demo_command", metavar="ACTION", required=True)
    seed = actions.add_parser("seed", help="train the demo's seed model from scratch")
    seed.add_argument("--output", required=True, help="directory for the checkpoint")
    seed.add_argument("--steps", type=int, default=1500, help="at most this many steps")
    seed.add_argument(
        "--target-acc", type=float, default=0.5, help="stop at this held-out accuracy"
    )
    seed.add_argument("--problems", type=int, default=4000)
    seed.add_argument("--seed", type=int, default=0)
    seed.set_defaults(func=cmd_demo_seed)


def cmd_demo_seed(args: argparse.Namespace) -> int:
    with stderr_for_libraries():
        from selfevo.demo_world.seed_model import train_seed

        info = train_seed(
            args.output,
            steps=args.steps,
            problems=args.problems,
            target_acc=args.target_acc,
            seed=args.seed,
            emit=progress,
        )
    print(json.dumps(info, indent=2))
    return 0
