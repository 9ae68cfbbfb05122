"""A run's summary and report, built from its manifest alone.

:func:`build_summary` turns ``manifest.json`` into ``summary.json``: ``wall_seconds`` and one
entry per round, round 0 being the meta-skill model. :func:`write_report` also writes
``report.md`` with four plots (accuracy per round, data yield per stage, filter quality, time
per stage); ``selfevo report RUN_DIR`` calls it again on a finished or half-finished run.
matplotlib is imported only when plotting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfevo.manifest import DONE, MANIFEST_FILE


def _steps(run_dir: Path) -> dict[str, dict[str, Any]]:
    path = run_dir / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {MANIFEST_FILE})")
    return {s["name"]: s for s in json.loads(path.read_text())["steps"]}


def _acc(metrics: dict[str, Any], key: str) -> float | None:
    return (metrics.get(key) or {}).get("acc")


def _round_entry(index: int, steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    evaluation = steps.get(f"round{index}.eval", {}).get("metrics", {})
    filtered = steps.get(f"round{index}.filter", {}).get("metrics", {})
    synthesized = steps.get(f"round{index}.synthesize", {}).get("metrics", {})
    judge = filtered.get("judge") or {}
    seconds = {
        name.split(".", 1)[1]: step.get("seconds")
        for name, step in steps.items()
        if name.startswith(f"round{index}.") and step.get("status") == DONE
    }
    if index == 0:
        seconds = {
            name: steps[name].get("seconds")
            for name in ("meta.label", "meta.train", "round0.eval")
            if steps.get(name, {}).get("status") == DONE
        }
    return {
        "round": index,
        "direct_acc": _acc(evaluation, "direct"),
        "direct_ci": (evaluation.get("direct") or {}).get("ci"),
        "eval_n": (evaluation.get("direct") or {}).get("n"),
        "refine_acc": _acc(evaluation, "refine"),
        "refine_ci": (evaluation.get("refine") or {}).get("ci"),
        "sc_acc": _acc(evaluation, "sc"),
        "sc_ci": (evaluation.get("sc") or {}).get("ci"),
        "sc_refine_acc": _acc(evaluation, "sc_refine"),
        "eval_judge_precision": (evaluation.get("judge") or {}).get("precision"),
        "eval_judge_recall": (evaluation.get("judge") or {}).get("recall"),
        "eval_judge_agreement": (evaluation.get("judge") or {}).get("agreement"),
        "eval_judge_balanced": (evaluation.get("judge") or {}).get("balanced"),
        "eval_judged": (evaluation.get("judge") or {}).get("judged"),
        "generated": filtered.get("generated") if index else None,
        "kept": filtered.get("kept") if index else None,
        "kept_acc": filtered.get("kept_acc") if index else None,
        "all_acc": filtered.get("all_acc") if index else None,
        "judge_precision": judge.get("precision") if index else None,
        "judge_recall": judge.get("recall") if index else None,
        # I-SHEEP: accepted synthesized prompts, those that read back as problems of the
        # task, and how well the self-assessed quality separates right from wrong answers.
        "synthesized": synthesized.get("accepted"),
        "synthesized_valid": synthesized.get("with_gold"),
        "quality_auc": filtered.get("quality_auc") if index else None,
        "train_loss": steps.get("meta.train" if index == 0 else f"round{index}.train", {})
        .get("metrics", {})
        .get("final_loss"),
        "seconds": seconds,
    }


def _recipe_name(run_dir: Path) -> str | None:
    """The run's recipe, from the ``config.yaml`` the coordinator writes beside the manifest."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    return ((yaml.safe_load(path.read_text()) or {}).get("recipe") or {}).get("name")


def build_summary(run_dir: str | Path) -> dict[str, Any]:
    """The summary of the run in ``run_dir`` (rounds whose eval is not done yet are left out)."""
    run_dir = Path(run_dir)
    steps = _steps(run_dir)
    rounds = []
    index = 0
    while steps.get(f"round{index}.eval", {}).get("status") == DONE:
        rounds.append(_round_entry(index, steps))
        index += 1
    wall = sum(s.get("seconds") or 0.0 for s in steps.values() if s.get("status") == DONE)
    label = steps.get("meta.label", {}).get("metrics", {})
    return {
        "run_dir": str(run_dir),
        "recipe": _recipe_name(run_dir),
        "wall_seconds": round(wall, 1),
        "complete": all(s.get("status") == DONE for s in steps.values() if s["name"] != "report"),
        "meta": {
            "labeler": label.get("labeler"),
            "judged_correct": label.get("judged_correct"),
            "judged_incorrect": label.get("judged_incorrect"),
            "labeler_errors": label.get("labeler_errors"),
        },
        "rounds": rounds,
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_rows(summary: dict[str, Any]) -> list[list[str]]:
    """The per-round table (header first) that ``selfevo run`` prints and report.md shows.

    The self-consistency column appears when some round measured it (``eval.sc_samples``),
    the synthesis columns in I-SHEEP runs."""
    columns: list[tuple[str, Any]] = [
        ("round", lambda r: str(r["round"])),
        ("direct acc [95% CI]", _direct_cell),
        ("refine acc", lambda r: _fmt(r["refine_acc"])),
        ("sc acc", lambda r: _fmt(r["sc_acc"])),
        ("kept/generated", _kept_cell),
        ("kept acc", lambda r: _fmt(r["kept_acc"])),
        ("all acc", lambda r: _fmt(r["all_acc"])),
        ("filter precision", lambda r: _fmt(r["judge_precision"])),
        ("held-out judge: agree (P/R)", _judge_cell),
        ("valid synthesized", _valid_cell),
        ("quality AUC", lambda r: _fmt(r.get("quality_auc"))),
    ]
    rounds = summary["rounds"]
    shown = {
        "sc acc": any(r.get("sc_acc") is not None for r in rounds),
        "valid synthesized": any(r.get("synthesized") is not None for r in rounds),
    }
    shown["quality AUC"] = shown["valid synthesized"]
    columns = [(name, cell) for name, cell in columns if shown.get(name, True)]
    return [[name for name, _ in columns]] + [[cell(r) for _, cell in columns] for r in rounds]


def _direct_cell(entry: dict[str, Any]) -> str:
    ci = entry["direct_ci"] or [None, None]
    return f"{_fmt(entry['direct_acc'])} [{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _kept_cell(entry: dict[str, Any]) -> str:
    return "-" if entry["generated"] is None else f"{entry['kept']}/{entry['generated']}"


def _valid_cell(entry: dict[str, Any]) -> str:
    """Accepted synthesized prompts that read back as problems of the task, of all accepted."""
    accepted, valid = entry.get("synthesized"), entry.get("synthesized_valid")
    if accepted is None or valid is None:  # no synthesis, or a task that cannot check it
        return "-"
    if not accepted:
        return "0/0"
    return f"{valid}/{accepted} ({valid / accepted:.0%})"


def _judge_cell(entry: dict[str, Any]) -> str:
    """The held-out judge's agreement with the gold, with its precision and recall."""
    agreement = entry.get("eval_judge_agreement")
    if agreement is None:
        return "-"
    precision, recall = entry.get("eval_judge_precision"), entry.get("eval_judge_recall")
    return f"{_fmt(agreement)} ({_fmt(precision, 2)}/{_fmt(recall, 2)})"


def format_table(summary: dict[str, Any]) -> str:
    rows = table_rows(summary)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _markdown_table(summary: dict[str, Any]) -> str:
    rows = table_rows(summary)
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(out)


def _plots(summary: dict[str, Any], run_dir: Path) -> list[tuple[str, str]]:
    """The report's PNG plots, as (file name, title); filter plots only for evolved rounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = summary["rounds"]
    evolved = [r for r in rounds if r["generated"]]
    plots = [("accuracy.png", "Held-out accuracy per round (95% CI)", _plot_accuracy, rounds)]
    if evolved:
        plots += [
            ("yield.png", "Data yield per round", _plot_yield, evolved),
            ("filter.png", "Self-filter quality", _plot_filter, evolved),
        ]
    plots.append(("time.png", "Time per stage", _plot_time, rounds))
    made = []
    for name, title, draw, data in plots:
        fig, ax = plt.subplots(figsize=(7, 4) if draw is _plot_time else (6, 4))
        draw(ax, data)
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=100)
        plt.close(fig)
        made.append((name, title))
    return made


_ACCURACY_SERIES = (("direct", "direct"), ("refine", "self-refine"), ("sc", "self-consistency"))


def accuracy_axis_limits(rounds: list[dict[str, Any]], margin: float = 0.2) -> tuple[float, float]:
    """Y limits that frame every accuracy and its interval, with ``margin`` of their span
    either side: on a 0-1 axis a change from 0.930 to 0.960 and its intervals are invisible."""
    values = [
        bound
        for r in rounds
        for key, _ in _ACCURACY_SERIES
        if r.get(f"{key}_acc") is not None
        for bound in (r[f"{key}_acc"], *(r.get(f"{key}_ci") or ()))
    ]
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    pad = margin * max(high - low, 0.02)
    return max(0.0, low - pad), min(1.0, high + pad)


def _plot_accuracy(ax: Any, rounds: list[dict[str, Any]]) -> None:
    # Series side by side at each round, so that their intervals do not hide each other.
    for offset, (key, label) in zip((-0.08, 0.0, 0.08), _ACCURACY_SERIES, strict=True):
        points = [
            (r["round"], r[f"{key}_acc"], r[f"{key}_ci"])
            for r in rounds
            if r[f"{key}_acc"] is not None
        ]
        if points:
            low = [p[1] - p[2][0] for p in points]
            high = [p[2][1] - p[1] for p in points]
            xs, ys = [p[0] + offset for p in points], [p[1] for p in points]
            ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=label)
    ax.set(xlabel="round", ylabel="held-out accuracy", xticks=[r["round"] for r in rounds])
    ax.set(ylim=accuracy_axis_limits(rounds))
    ax.grid(axis="y", alpha=0.3)
    ax.legend()


def _plot_yield(ax: Any, evolved: list[dict[str, Any]]) -> None:
    xs = [r["round"] for r in evolved]
    ax.bar([x - 0.2 for x in xs], [r["generated"] for r in evolved], 0.4, label="generated")
    kept = [r["kept"] for r in evolved]
    ax.bar([x + 0.2 for x in xs], kept, 0.4, label="kept by the self-filter")
    ax.set(xlabel="round", ylabel="rows", xticks=xs)
    ax.legend()


def _plot_filter(ax: Any, evolved: list[dict[str, Any]]) -> None:
    xs = [r["round"] for r in evolved]
    for key, label in (
        ("kept_acc", "kept answers"),
        ("all_acc", "all answers"),
        ("judge_precision", "judge precision"),
        ("judge_recall", "judge recall"),
    ):
        ys = [r[key] for r in evolved]
        if any(y is not None for y in ys):
            ax.plot(xs, ys, marker="o", label=label)
    ax.set(xlabel="round", ylabel="accuracy against gold", ylim=(0, 1.05), xticks=xs)
    ax.legend()


def _plot_time(ax: Any, rounds: list[dict[str, Any]]) -> None:
    xs = [r["round"] for r in rounds]
    bottom = [0.0] * len(rounds)
    for stage in sorted({name for r in rounds for name in r["seconds"]}):
        values = [r["seconds"].get(stage) or 0.0 for r in rounds]
        ax.bar(xs, values, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set(xlabel="round", ylabel="seconds", xticks=xs)
    ax.legend(fontsize=7)


def write_report(run_dir: str | Path) -> dict[str, Any]:
    """Write ``summary.json``, ``report.md`` and its PNG plots into ``run_dir``."""
    run_dir = Path(run_dir)
    summary = build_summary(run_dir)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    plots = _plots(summary, run_dir) if summary["rounds"] else []
    meta = summary["meta"]
    lines = [
        f"# Run report: {run_dir.name}",
        "",
        f"Wall time of finished steps: {summary['wall_seconds']:.0f}s. "
        f"Meta-skill labeler: {meta['labeler']} ({meta['judged_correct']} judged correct, "
        f"{meta['judged_incorrect']} incorrect, {meta['labeler_errors']} labeler errors).",
        "",
        f"Recipe: {summary['recipe'] or 'unknown'}. Round 0 is the model before the first "
        "round (after meta-skill learning or a warm-up, when the run has one). *kept acc* and "
        "*all acc* score the self-filter's kept answers and every self-generated answer "
        "against the gold; *filter precision* is the share of answers the model judged "
        '"correct" that are correct; the *held-out judge* column is how often the model\'s '
        "verdict on its own held-out answers agrees with the gold, with the precision and "
        'recall of its "correct".'
        + (
            " I-SHEEP rounds add the accepted synthesized prompts that read back as problems "
            "of the task (*valid synthesized*) and the ROC AUC of the self-assessed quality "
            "score between right and wrong answers (*quality AUC*)."
            if summary["recipe"] == "isheep"
            else ""
        ),
        "",
        _markdown_table(summary),
        "",
    ]
    for name, title in plots:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    (run_dir / "report.md").write_text("\n".join(lines))
    return summary
