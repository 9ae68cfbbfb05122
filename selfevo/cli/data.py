"""``selfevo data check`` and ``selfevo score``: prompt files and benchmark scoring, no engines."""

from __future__ import annotations

import argparse
import json
import sys

from selfevo.readers import FORMATS, read_prompts
from selfevo.scoring import BENCHES, score_benchmark


def register(commands) -> None:
    data = commands.add_parser("data", help="inspect prompt files")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="report every bad row of a prompt file")
    check.add_argument("file", help=".jsonl, .json (array) or .parquet")
    check.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    check.set_defaults(func=cmd_data_check)

    score = commands.add_parser("score", help="score predictions against a math benchmark")
    score.add_argument("--bench", required=True, choices=BENCHES)
    score.add_argument("--data", required=True, help="the benchmark file (GSM8K JSONL, SVAMP JSON)")
    score.add_argument("--predictions", required=True, help='JSONL of {"id", "output"} rows')
    score.set_defaults(func=cmd_score)


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
