"""The commands that run a model outside a recipe: ``generate``, ``refine``, ``eval``,
``judge`` and ``train``. Each takes ``[CONFIG] [key=value ...]`` like ``run``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from selfevo.cli.common import add_config_arguments, config_of, stderr_for_libraries
from selfevo.config import ConfigError
from selfevo.readers import FORMATS

MODEL_HELP = "checkpoint dir or hub name (default: model.name_or_path)"
INPUT_HELP = "prompt file (.jsonl, .json, .parquet)"


def register(commands) -> None:
    _register_generate(commands)
    _register_refine(commands)
    _register_judge(commands)
    evaluation = commands.add_parser(
        "eval", help="held-out direct / refine / sc@n accuracy of a checkpoint (eval.* settings)"
    )
    evaluation.add_argument("--model", help=MODEL_HELP)
    evaluation.add_argument(
        "--output", help="where the eval records go (default: runs/eval/<model>)"
    )
    add_config_arguments(evaluation, "eval.num_problems=100")
    evaluation.set_defaults(func=cmd_eval)

    train = commands.add_parser("train", help="fine-tune on a records or SFT file (train.data)")
    add_config_arguments(train, "train.data=FILE")
    train.set_defaults(func=cmd_train)


def _register_generate(commands) -> None:
    gen = commands.add_parser(
        "generate", help="run prompts through generate -> feedback -> refine -> filter"
    )
    gen.add_argument("--model", help=MODEL_HELP)
    gen.add_argument("--input", required=True, help=INPUT_HELP)
    gen.add_argument("--output", required=True, help="records out (.jsonl or .parquet)")
    gen.add_argument(
        "--stages", help="comma list of generate,feedback,refine,rejudge (default: all)"
    )
    gen.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    add_config_arguments(gen, "sampling.n=4")
    gen.set_defaults(func=cmd_generate)


def _register_refine(commands) -> None:
    refine = commands.add_parser(
        "refine", help="answer with self-feedback and refinement (and self-consistency)"
    )
    refine.add_argument("--model", help=MODEL_HELP)
    refine.add_argument("--input", required=True, help=INPUT_HELP)
    refine.add_argument("--output", required=True, help="JSONL: one line per prompt")
    refine.add_argument("--samples", type=int, default=1, help="sampled answers to vote over")
    refine.add_argument("--max-iters", type=int, default=2, help="refinements per answer at most")
    refine.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    add_config_arguments(refine, "eval.refine_answer=accepted")
    refine.set_defaults(func=cmd_refine)


def _register_judge(commands) -> None:
    judge = commands.add_parser(
        "judge", help="pairwise-judge two systems' answers (both orders; win/tie/loss)"
    )
    judge.add_argument("--a", required=True, help='system A: JSONL of {"id", "output"} rows')
    judge.add_argument("--b", required=True, help="system B: the same form")
    judge.add_argument("--questions", required=True, help="the prompt file the ids refer to")
    judge.add_argument(
        "--judge", required=True, help="an OpenAI-compatible base URL, or a local model dir/name"
    )
    judge.add_argument("--judge-model", help="the endpoint's model name (endpoint judges)")
    judge.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="env var holding the endpoint's key"
    )
    judge.add_argument("--output", help="JSONL: both judgements and verdicts per question")
    judge.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    judge.add_argument("--max-retries", type=int, default=5)
    judge.add_argument("--concurrency", type=int, default=8, help="parallel endpoint requests")
    judge.add_argument("--max-new-tokens", type=int, default=512)
    judge.set_defaults(func=cmd_judge)


def _config_and_model(args: argparse.Namespace):
    config = config_of(args)
    return config, args.model or config.model.name_or_path


def cmd_generate(args: argparse.Namespace) -> int:
    config, model = _config_and_model(args)
    stages = args.stages.split(",") if args.stages else None
    with stderr_for_libraries():
        from actors.commands import generate

        summary = generate(config, model, args.input, args.output, stages, args.format)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    config, model = _config_and_model(args)
    output = Path(args.output or Path(config.run.output_dir) / "eval" / Path(model).name)
    with stderr_for_libraries():
        from actors.commands import evaluate_checkpoint

        metrics = evaluate_checkpoint(config, model, output)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_refine(args: argparse.Namespace) -> int:
    config, model = _config_and_model(args)
    with stderr_for_libraries():
        from actors.commands import refine_file

        summary = refine_file(
            config, model, args.input, args.output, args.samples, args.max_iters, args.format
        )
    print(json.dumps(summary, indent=2))
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    with stderr_for_libraries():
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
    print(
        f"A vs B over {summary.total} questions (each judged in both orders): "
        f"{summary.wins} wins, {summary.ties} ties, {summary.losses} losses "
        f"({summary.unparsed} verdicts unparsed); win rate {summary.win_rate:.3f} "
        "(ties count half)",
        file=sys.stderr,
    )
    result = {
        "wins": summary.wins,
        "ties": summary.ties,
        "losses": summary.losses,
        "unparsed": summary.unparsed,
        "win_rate": round(summary.win_rate, 4),
    }
    print(json.dumps(result))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    config = config_of(args)
    if not config.train.data:
        raise ConfigError("selfevo train needs train.data=FILE (SFT rows or pipeline records)")
    with stderr_for_libraries():
        from dataclasses import asdict

        from actors.runtime import init_ray
        from actors.trainer import convert_training_file, train
        from selfevo.tasks import resolve_model

        output = Path(config.run.output_dir) / config.run.name / "train"
        training_set = output / "training_set.parquet"
        count = convert_training_file(config.train.data, training_set)
        print(f"training set: {count} examples from {config.train.data}")
        init_ray(config.cluster)
        summary = train(config, training_set, resolve_model(config.model.name_or_path), output)
    print(json.dumps(asdict(summary), indent=2))
    return 0
