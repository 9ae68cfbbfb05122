"""The ``selfevo`` command line.

Exit codes: 0 success, 1 the input has problems (bad rows), 2 bad usage or config.
Heavy work (engines, training) is imported inside the subcommand that needs it, so
``selfevo --help`` and the pure subcommands start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from selfevo import __version__
from selfevo.config import DEFAULT_CONFIG, ConfigError, load_config, to_yaml
from selfevo.readers import FORMATS, DataError, read_prompts
from selfevo.scoring import BENCHES, score_benchmark


def _split_config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str, list[str]]:
    """``selfevo run train.epochs=3`` means the default config with one override."""
    if config is not None and "=" in config and not Path(config).exists():
        return DEFAULT_CONFIG, [config, *overrides]
    return config or DEFAULT_CONFIG, overrides


def cmd_config_show(args: argparse.Namespace) -> int:
    name, overrides = _split_config_and_overrides(args.config, args.overrides)
    print(to_yaml(load_config(name, overrides)), end="")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    result = read_prompts(args.file, fmt=args.format)
    for error in result.errors:
        print(f"{args.file}: {error}")
    fmt = result.format or "unknown"
    print(
        f"{result.total} rows: {len(result.records)} good, {len(result.errors)} bad (format: {fmt})"
    )
    return 1 if result.errors else 0


def cmd_score(args: argparse.Namespace) -> int:
    summary = score_benchmark(args.bench, args.data, args.predictions)
    if summary["bad_prediction_row_count"]:
        print(
            f"warning: {summary['bad_prediction_row_count']} unreadable prediction row(s), "
            "see bad_prediction_rows",
            file=sys.stderr,
        )
    print(json.dumps(summary, indent=2))
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
    name, overrides = _split_config_and_overrides(args.config, args.overrides)
    config = load_config(name, overrides)
    if not _check_plan(config):
        print("see `selfevo plan` for the whole layout", file=sys.stderr)
        return 1
    _preflight(config)
    run_dir = Path(config.run.output_dir) / config.run.name
    print(f"run directory: {run_dir}")
    print(f"recipe: {config.recipe.name.value}, {config.recipe.rounds} round(s)", flush=True)
    with contextlib.redirect_stdout(sys.stderr):
        from actors.coordinator import run_recipe
        from actors.runtime import init_ray

        init_ray(config.cluster)
        summary = run_recipe(config, emit=lambda line: print(line, file=sys.stderr, flush=True))
    from selfevo.report import format_table

    print(format_table(summary))
    print(f"wall time {summary['wall_seconds']:.0f}s; report: {run_dir / 'report.md'}")
    return 0


def _model_or_config(args: argparse.Namespace):
    name, overrides = _split_config_and_overrides(args.config, args.overrides)
    config = load_config(name, overrides)
    return config, args.model or config.model.name_or_path


def cmd_eval(args: argparse.Namespace) -> int:
    config, model = _model_or_config(args)
    output = Path(args.output or Path(config.run.output_dir) / "eval" / Path(model).name)
    with contextlib.redirect_stdout(sys.stderr):
        from actors.commands import evaluate_checkpoint

        metrics = evaluate_checkpoint(config, model, output)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_refine(args: argparse.Namespace) -> int:
    config, model = _model_or_config(args)
    with contextlib.redirect_stdout(sys.stderr):
        from actors.commands import refine_file

        summary = refine_file(
            config, model, args.input, args.output, args.samples, args.max_iters, args.format
        )
    print(json.dumps(summary, indent=2))
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    with contextlib.redirect_stdout(sys.stderr):
        from actors.judge import build_judge, judge_files

        judge = build_judge(
            args.judge,
            judge_model=args.judge_model,
            api_key_env=args.api_key_env,
            timeout_s=args.timeout,
            max_retries=args.max_retries,
            concurrency=args.concurrency,
            max_tokens=args.max_new_tokens,
        )
        summary = judge_files(judge, args.questions, args.a, args.b, args.output)
    for error in sorted(set(judge.errors)):
        print(f"warning: judge request failed (pair counted as a tie): {error}", file=sys.stderr)
    result = {
        "wins": summary.wins,
        "ties": summary.ties,
        "losses": summary.losses,
        "unparsed": summary.unparsed,
        "win_rate": round(summary.win_rate, 4),
    }
    print(
        f"A vs B over {summary.total} questions (each judged in both orders): "
        f"{summary.wins} wins, {summary.ties} ties, {summary.losses} losses "
        f"({summary.unparsed} verdicts unparsed); win rate {summary.win_rate:.3f} "
        "(ties count half)",
        file=sys.stderr,
    )
    print(json.dumps(result))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from selfevo.report import format_table, write_report

    summary = write_report(args.run_dir)
    print(format_table(summary))
    print(f"report: {Path(args.run_dir) / 'report.md'}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from selfevo.planner import format_plan, format_simulation, plan

    config = load_config(args.config, args.overrides)
    result = plan(config)
    report = result.to_dict()
    if args.simulate and result.fits:
        from actors.placement import simulate

        report["simulated"] = simulate(config)
    print(json.dumps(report, indent=2) if args.json else format_plan(result))
    if "simulated" in report and not args.json:
        print(format_simulation(report["simulated"]))
    return 0 if result.fits else 1


def cmd_demo_seed(args: argparse.Namespace) -> int:
    with contextlib.redirect_stdout(sys.stderr):
        from actors.demo_seed import train_seed

        info = train_seed(
            args.output,
            steps=args.steps,
            problems=args.problems,
            target_acc=args.target_acc,
            seed=args.seed,
            emit=lambda line: print(line, file=sys.stderr, flush=True),
        )
    print(json.dumps(info, indent=2))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    config = load_config(args.config or DEFAULT_CONFIG, args.overrides)
    model = args.model or config.model.name_or_path
    from actors.commands import generate

    stages = args.stages.split(",") if args.stages else None
    # Libraries print to stdout (DeepSpeed's accelerator notice); keep stdout for the summary.
    with contextlib.redirect_stdout(sys.stderr):
        summary = generate(config, model, args.input, args.output, stages, args.format)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    name, overrides = _split_config_and_overrides(args.config, args.overrides)
    config = load_config(name, overrides)
    if not config.train.data:
        raise ConfigError("selfevo train needs train.data=FILE (SFT rows or pipeline records)")
    with contextlib.redirect_stdout(sys.stderr):
        from dataclasses import asdict

        from actors.coordinator import resolve_model
        from actors.runtime import init_ray
        from actors.trainer import convert_training_file, train

        output = Path(config.run.output_dir) / config.run.name / "train"
        training_set = output / "training_set.parquet"
        count = convert_training_file(config.train.data, training_set)
        print(f"training set: {count} examples from {config.train.data}")
        init_ray(config.cluster)
        summary = train(config, training_set, resolve_model(config.model.name_or_path), output)
    print(json.dumps(asdict(summary), indent=2))
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    with contextlib.redirect_stdout(sys.stderr):
        from actors import bench_train

        report = bench_train.run(
            zero_stage=args.zero_stage,
            workers=args.workers,
            hidden_size=args.hidden_size,
            num_layers=args.num_layers,
            steps=args.steps,
            use_gpu=args.gpu,
            peak_tflops=args.peak_tflops,
        )
    print(json.dumps(report, indent=2 if args.json else None))
    return 0


def cmd_bench_generate(args: argparse.Namespace) -> int:
    with contextlib.redirect_stdout(sys.stderr):
        from actors import bench

        report = bench.run(
            prompts=args.prompts,
            max_new_tokens=args.max_new_tokens,
            batch=args.batch_size,
            pipeline=not args.engine_only,
            vllm=not args.engine_only and not args.no_vllm,
        )
    print(json.dumps(report, indent=2) if args.json else bench.format_report(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfevo",
        description="Self-evolution of language models on Ray: SELF, I-SHEEP, mistake analysis.",
    )
    parser.add_argument("--version", action="version", version=f"selfevo {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run a recipe (default: the embedded demo)")
    run.add_argument("config", nargs="?", help=f"YAML path or name under conf/ ({DEFAULT_CONFIG})")
    run.add_argument("overrides", nargs="*", help="key=value overrides, e.g. recipe.rounds=3")
    run.set_defaults(func=cmd_run)

    config = commands.add_parser("config", help="inspect configs")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = config_commands.add_parser("show", help="print the resolved config")
    show.add_argument("config", nargs="?", help=f"YAML path or name under conf/ ({DEFAULT_CONFIG})")
    show.add_argument("overrides", nargs="*", help="key=value overrides")
    show.set_defaults(func=cmd_config_show)

    data = commands.add_parser("data", help="inspect prompt files")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = data_commands.add_parser("check", help="report every bad row of a prompt file")
    check.add_argument("file", help=".jsonl, .json (array) or .parquet")
    check.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    check.set_defaults(func=cmd_data_check)

    gen = commands.add_parser(
        "generate", help="run prompts through generate -> feedback -> refine -> filter"
    )
    gen.add_argument("--model", help="checkpoint dir or hub name (default: model.name_or_path)")
    gen.add_argument("--input", required=True, help="prompt file (.jsonl, .json, .parquet)")
    gen.add_argument("--output", required=True, help="records out (.jsonl or .parquet)")
    gen.add_argument(
        "--stages", help="comma list of generate,feedback,refine,rejudge (default: all)"
    )
    gen.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    gen.add_argument("--config", help=f"YAML path or name under conf/ ({DEFAULT_CONFIG})")
    gen.add_argument("overrides", nargs="*", help="key=value overrides")
    gen.set_defaults(func=cmd_generate)

    bench = commands.add_parser("bench", help="measure speed")
    bench_commands = bench.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    bench_gen = bench_commands.add_parser(
        "generate",
        help="engine batching gain, pipeline scaling over 1 and 2 engines, vLLM vs HF and pool",
    )
    bench_gen.add_argument("--json", action="store_true", help="print the report as JSON")
    bench_gen.add_argument("--prompts", type=int, default=1024)
    bench_gen.add_argument("--max-new-tokens", type=int, default=32)
    bench_gen.add_argument("--batch-size", type=int, default=64)
    bench_gen.add_argument(
        "--engine-only", action="store_true", help="only the HF engine's batching gain"
    )
    bench_gen.add_argument("--no-vllm", action="store_true", help="skip the vLLM comparison")
    bench_gen.set_defaults(func=cmd_bench_generate)
    bench_train = bench_commands.add_parser(
        "train", help="training tokens/s (and MFU on GPU) through Ray Train + DeepSpeed"
    )
    bench_train.add_argument("--json", action="store_true", help="print the report as JSON")
    bench_train.add_argument("--zero-stage", type=int, default=2, choices=[0, 1, 2, 3])
    bench_train.add_argument("--workers", type=int, default=2)
    bench_train.add_argument("--hidden-size", type=int, default=256)
    bench_train.add_argument("--num-layers", type=int, default=4)
    bench_train.add_argument("--steps", type=int, default=12)
    bench_train.add_argument("--gpu", action="store_true", help="one GPU per worker, bf16")
    bench_train.add_argument("--peak-tflops", type=float, default=0.0, help="for MFU on GPU")
    bench_train.set_defaults(func=cmd_bench_train)

    trainp = commands.add_parser("train", help="fine-tune on a records or SFT file (train.data)")
    trainp.add_argument(
        "config", nargs="?", help=f"YAML path or name under conf/ ({DEFAULT_CONFIG})"
    )
    trainp.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.data=FILE")
    trainp.set_defaults(func=cmd_train)

    evalp = commands.add_parser(
        "eval", help="held-out direct / refine / sc@n accuracy of a checkpoint (eval.* settings)"
    )
    evalp.add_argument("--model", help="checkpoint dir or hub name (default: model.name_or_path)")
    evalp.add_argument("--output", help="where the eval records go (default: runs/eval/<model>)")
    evalp.add_argument(
        "config", nargs="?", help=f"YAML path or name under conf/ ({DEFAULT_CONFIG})"
    )
    evalp.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. eval.num_problems=100"
    )
    evalp.set_defaults(func=cmd_eval)

    refinep = commands.add_parser(
        "refine", help="answer with self-feedback and refinement (and self-consistency)"
    )
    refinep.add_argument("--model", help="checkpoint dir or hub name (default: model.name_or_path)")
    refinep.add_argument("--input", required=True, help="prompt file (.jsonl, .json, .parquet)")
    refinep.add_argument("--output", required=True, help="JSONL: one line per prompt")
    refinep.add_argument("--samples", type=int, default=1, help="sampled answers to vote over")
    refinep.add_argument("--max-iters", type=int, default=2, help="refinements per answer at most")
    refinep.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    refinep.add_argument(
        "config", nargs="?", help=f"YAML path or name under conf/ ({DEFAULT_CONFIG})"
    )
    refinep.add_argument("overrides", nargs="*", help="key=value overrides")
    refinep.set_defaults(func=cmd_refine)

    judgep = commands.add_parser(
        "judge", help="pairwise-judge two systems' answers (both orders; win/tie/loss)"
    )
    judgep.add_argument("--a", required=True, help='system A: JSONL of {"id", "output"} rows')
    judgep.add_argument("--b", required=True, help="system B: the same form")
    judgep.add_argument("--questions", required=True, help="the prompt file the ids refer to")
    judgep.add_argument(
        "--judge", required=True, help="an OpenAI-compatible base URL, or a local model dir/name"
    )
    judgep.add_argument("--judge-model", help="the endpoint's model name (endpoint judges)")
    judgep.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="env var holding the endpoint's key"
    )
    judgep.add_argument("--output", help="JSONL: both judgements and verdicts per question")
    judgep.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    judgep.add_argument("--max-retries", type=int, default=5)
    judgep.add_argument("--concurrency", type=int, default=8, help="parallel endpoint requests")
    judgep.add_argument("--max-new-tokens", type=int, default=512)
    judgep.set_defaults(func=cmd_judge)

    reportp = commands.add_parser("report", help="render summary.json and report.md of a run")
    reportp.add_argument("run_dir", help="the run directory (runs/<name>)")
    reportp.set_defaults(func=cmd_report)

    planp = commands.add_parser(
        "plan", help="placement and per-GPU memory of a GPU config; exit 1 when it does not fit"
    )
    planp.add_argument("config", help="YAML path or name under conf/ (e.g. scale/llama3_70b_4x8)")
    planp.add_argument("overrides", nargs="*", help="key=value overrides")
    planp.add_argument("--json", action="store_true", help="print the plan as JSON")
    planp.add_argument(
        "--simulate",
        action="store_true",
        help="also place it on a simulated Ray cluster of that shape (stand-in actors)",
    )
    planp.set_defaults(func=cmd_plan)

    demo = commands.add_parser("demo", help="the embedded demo world")
    demo_commands = demo.add_subparsers(dest="demo_command", metavar="ACTION", required=True)
    seed = demo_commands.add_parser("seed", help="train the demo's seed model from scratch")
    seed.add_argument("--output", required=True, help="directory for the checkpoint")
    seed.add_argument("--steps", type=int, default=1500, help="at most this many steps")
    seed.add_argument(
        "--target-acc", type=float, default=0.5, help="stop at this held-out accuracy"
    )
    seed.add_argument("--problems", type=int, default=4000)
    seed.add_argument("--seed", type=int, default=0)
    seed.set_defaults(func=cmd_demo_seed)

    score = commands.add_parser("score", help="score predictions against a math benchmark")
    score.add_argument("--bench", required=True, choices=BENCHES)
    score.add_argument("--data", required=True, help="the benchmark file (GSM8K JSONL, SVAMP JSON)")
    score.add_argument("--predictions", required=True, help='JSONL of {"id", "output"} rows')
    score.set_defaults(func=cmd_score)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
