"""``selfevo run``, ``ablate``, ``config show``, ``report`` and ``plan``: running a recipe or
a paper's ablations, and inspecting a config, a report and a GPU layout."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from selfevo.cli.common import (
    add_config_arguments,
    config_of,
    configs_and_overrides,
    progress,
    stderr_for_libraries,
)
from selfevo.config import ConfigError, load_config, split_configs_and_overrides, to_yaml
from selfevo.manifest import MANIFEST_FILE, open_run
from selfevo.recipes import recipe_named


def register(commands) -> None:
    run = commands.add_parser("run", help="run a recipe (default: the embedded demo)")
    add_config_arguments(run)
    run.set_defaults(func=cmd_run)

    ablate = commands.add_parser(
        "ablate",
        help="the paper's ablations of SELF (filtered vs not, rounds, training strategies, "
        "...) or mistake analysis (with vs without the analyses)",
    )
    add_config_arguments(ablate)
    ablate.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds of the main arm (SELF: 3 by default, its other arms run fewer; mistake "
        "analysis: the config's)",
    )
    ablate.add_argument(
        "--arms",
        help="a comma-separated subset: self,unfiltered,restart,continual_alone,qa_only "
        "(SELF) or analysis,answers_only (mistake analysis)",
    )
    ablate.set_defaults(func=cmd_ablate)

    config = commands.add_parser("config", help="inspect configs")
    actions = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="print the resolved config")
    add_config_arguments(show)
    show.set_defaults(func=cmd_config_show)

    report = commands.add_parser("report", help="render summary.json and report.md of a run")
    report.add_argument("run_dir", help="the run directory (runs/<name>)")
    report.set_defaults(func=cmd_report)

    plan = commands.add_parser(
        "plan", help="placement and per-GPU memory of a GPU config; exit 1 when it does not fit"
    )
    plan.add_argument(
        "words",
        nargs="+",
        metavar="CONFIG|key=value",
        help="configs merged in order (e.g. recipes/self_math scale/llama3_70b_4x8), then "
        "key=value overrides",
    )
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument(
        "--simulate",
        action="store_true",
        help="also place it on a simulated Ray cluster of that shape (stand-in actors)",
    )
    plan.set_defaults(func=cmd_plan)


def cmd_config_show(args: argparse.Namespace) -> int:
    print(to_yaml(config_of(args)), end="")
    return 0


def _check_plan(config) -> bool:
    """On a GPU config, refuse a layout the planner says cannot fit (before Ray starts)."""
    from selfevo.planner import PlanError, plan

    if not (config.cluster.gpus_per_node and config.train.use_gpu):
        return True
    try:
        result = plan(config)
    except PlanError as exc:
        print(f"warning: not checking the GPU layout: {exc}", file=sys.stderr)
        return True
    for problem in result.problems:
        print(f"error: does not fit: {problem}", file=sys.stderr)
    return result.fits


def _preflight(config) -> None:
    """Read every data source a run needs before any engine starts: bad rows fail in seconds."""
    from selfevo import datasets

    datasets.meta_prompts(config)
    if config.recipe.rounds:
        datasets.pool_slice(config, 1)
    datasets.eval_problems(config)


def cmd_run(args: argparse.Namespace) -> int:
    config = config_of(args)
    if not _check_plan(config):
        print("see `selfevo plan` for the whole layout", file=sys.stderr)
        return 1
    _preflight(config)
    run_dir = Path(config.run.output_dir) / config.run.name
    if (run_dir / MANIFEST_FILE).exists():  # another config's run is refused before Ray starts
        open_run(config, run_dir, recipe_named(config.recipe.name.value))
    print(f"run directory: {run_dir}")
    print(f"recipe: {config.recipe.name.value}, {config.recipe.rounds} round(s)", flush=True)
    with stderr_for_libraries():
        from actors.coordinator import run_recipe
        from actors.runtime import init_ray

        local = init_ray(config.cluster, quiet=True)
        try:
            summary = run_recipe(config, emit=progress)
        finally:
            _point_at_logs(run_dir, local)
    from selfevo.report import format_table

    print(format_table(summary))
    print(f"wall time {summary['wall_seconds']:.0f}s; report: {run_dir / 'report.md'}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from selfevo.ablation import arms, main_rounds

    configs, overrides = configs_and_overrides(args.words)
    config = load_config(configs, overrides)
    names = [n.strip() for n in args.arms.split(",")] if args.arms else None
    recipe = config.recipe.name.value
    try:  # a bad recipe, arm name or round count fails before Ray starts
        arms(main_rounds(recipe, config.recipe.rounds, args.rounds), names, recipe)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not _check_plan(config):
        print("see `selfevo plan` for the whole layout", file=sys.stderr)
        return 1
    _preflight(config)
    out = Path(config.run.output_dir) / f"{config.run.name}-ablation"
    print(f"ablation directory: {out}", flush=True)
    with stderr_for_libraries():
        from actors.ablation import run_ablation
        from actors.runtime import init_ray

        local = init_ray(config.cluster, quiet=True)
        try:
            report = run_ablation(configs, overrides, args.rounds, progress, names)
        finally:
            _point_at_logs(out, local)
    from selfevo.ablation import markdown

    print(markdown(report["comparisons"]))
    print(f"wall time {report['wall_seconds']:.0f}s; report: {out / 'ablation.md'}")
    failed = [name for name, arm in report["arms"].items() if arm.get("error")]
    if failed:
        print(f"arms that failed (rerun to resume them): {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _point_at_logs(run_dir: Path, local: bool) -> None:
    """Where the workers' output went: copied into the run directory from a local Ray; on a
    cluster it stays on the nodes."""
    from actors.runtime import copy_ray_logs

    try:
        logs = copy_ray_logs(run_dir / "logs" / "ray") if local else None
    except OSError as exc:  # never hide the run's own outcome behind a copy that failed
        progress(f"warning: could not copy Ray's logs: {exc}")
        logs = None
    where = str(logs) if logs else "on the cluster's nodes (`ray logs`, or the dashboard)"
    progress(f"logs: selfevo's in {run_dir / 'run.log'}; the workers' output {where}")


def cmd_report(args: argparse.Namespace) -> int:
    from selfevo.report import format_table, write_report

    summary = write_report(args.run_dir)
    print(format_table(summary))
    print(f"report: {Path(args.run_dir) / 'report.md'}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from selfevo.planner import format_plan, format_simulation, plan

    configs, overrides = split_configs_and_overrides(args.words)
    if not configs:
        raise ConfigError("selfevo plan needs a config (e.g. scale/llama3_70b_4x8)")
    config = load_config(configs, overrides)
    result = plan(config)
    report = result.to_dict()
    if args.simulate and result.fits:
        from actors.placement import simulate

        report["simulated"] = simulate(config)
    print(json.dumps(report, indent=2) if args.json else format_plan(result))
    if "simulated" in report and not args.json:
        print(format_simulation(report["simulated"]))
    return 0 if result.fits else 1
