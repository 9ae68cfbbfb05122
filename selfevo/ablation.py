"""The papers' ablations, the pure part: the arms ``selfevo ablate`` runs, and the comparisons
it draws from their summaries, each set against the paper's finding.

The arms are runs of one config that differ in one setting each (the ``self`` arm also
scores self-consistency over refined answers, ``eval.sc_refine``). For SELF:

- ``self``: the method (continual training with the meta-skill data replayed), ``rounds``
  rounds: accuracy per round, kept vs all self-generated answers, and direct vs
  self-refined vs self-consistent answers at inference;
- ``unfiltered``: one round trained on every answer, judged correct or not;
- ``restart``: each round trains the meta-skill model afresh (not the last round's) on every
  round's kept answers, with the same meta-skill replay (the paper restarts from the base
  model on all of the meta-skill data);
- ``continual_alone``: continual training without the meta-skill replay;
- ``qa_only``: meta-skill learning on the QA pairs alone (no critiques or refinements).

For mistake analysis (``recipe.name: mistake_analysis``):

- ``analysis``: the method, each round training on the own answers and the analyses of
  induced mistakes;
- ``answers_only``: the same rounds on the own answers alone (the paper's baseline is
  fine-tuning on good answers; here the own answers are kept as they are, as the method
  keeps them).

The arms that change only the rounds start from the main arm's (the first's) meta-skill
model and round-0 evaluation (``shares_meta``), so the comparison is of the rounds alone and
SELF's meta-skill phase runs twice, not five times. Rerunning resumes only with the same
``--rounds`` (the rounds are part of each arm's config).

Every figure carries its Wilson 95% interval. A finding "holds" when the demo's ordering is
the paper's; it holds "beyond the intervals" when the intervals do not overlap.
Departures from the paper: the paper ran its ablations on Vicuna-7B with GSM8K; here they
run on whatever the config names (the demo world by default), on a scale that fits a laptop.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from selfevo.scoring import wilson_interval


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...]  # the arm's setting: applied after the user's overrides
    rounds: int
    shares_meta: bool
    what: str
    # Settings the arm needs unless the user says otherwise: applied before their overrides.
    defaults: tuple[str, ...] = ()


RECIPES = ("self", "mistake_analysis")


def main_rounds(recipe: str, configured: int, asked: int | None) -> int:
    """The main arm's rounds: as asked, else SELF's three (the paper's), else the config's."""
    if asked is not None:
        return asked
    return 3 if recipe == "self" else configured


def arms(rounds: int = 3, names: list[str] | None = None, recipe: str = "self") -> list[Arm]:
    """The ablation's arms of ``recipe`` for a ``rounds``-round main arm (SELF's others run
    fewer); ``names`` picks some (the main arm among them when an arm shares its meta-skill
    phase)."""
    if recipe not in RECIPES:
        raise ValueError(f"selfevo ablate knows the ablations of {list(RECIPES)}, not {recipe!r}")
    if rounds < 1:
        raise ValueError(f"the ablation needs at least one round, got {rounds}")
    every = _self_arms(rounds) if recipe == "self" else _mistake_arms(rounds)
    if names is None:
        return every
    known = [arm.name for arm in every]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown ablation arm(s) {unknown}; known: {known}")
    chosen = [arm for arm in every if arm.name in names]
    main = every[0].name
    if main not in names and any(arm.shares_meta for arm in chosen):
        raise ValueError(f"arms that share the meta-skill phase need the {main} arm too")
    return chosen


def _mistake_arms(rounds: int) -> list[Arm]:
    return [
        Arm(
            "analysis",
            ("recipe.analysis_rows=true",),
            rounds,
            False,
            "mistake analysis: the own answers and the analyses of induced mistakes",
        ),
        Arm(
            "answers_only",
            ("recipe.analysis_rows=false",),
            rounds,
            True,
            "the same rounds on the own answers alone, without the analyses",
        ),
    ]


def _self_arms(rounds: int) -> list[Arm]:
    strategy_rounds = min(rounds, 2)
    return [
        Arm(
            "self",
            ("train.mode=continual",),
            rounds,
            False,
            "SELF: continual training with the meta-skill data replayed",
            # The inference comparison: self-consistency of first and of refined answers.
            ("eval.sc_samples=3", "eval.sc_refine=true"),
        ),
        Arm(
            "unfiltered",
            ("train.mode=continual", "recipe.self_filter=false"),
            1,
            True,
            "round 1 trained on every answer, judged correct or not",
        ),
        Arm(
            "restart",
            ("train.mode=restart",),
            strategy_rounds,
            True,
            "each round trains the meta-skill model afresh on all rounds' kept answers",
        ),
        Arm(
            "continual_alone",
            ("train.mode=continual", "train.meta_mix_ratio=0"),
            strategy_rounds,
            True,
            "continual training without the meta-skill replay",
        ),
        Arm(
            "qa_only",
            ("recipe.meta_skill_data=false",),
            0,
            False,
            "meta-skill learning on the QA pairs alone",
        ),
    ]


def figure(label: str, acc: float | None, n: int | None) -> dict[str, Any]:
    """One accuracy with its Wilson 95% interval (None when it was not measured)."""
    if acc is None or not n:
        return {"label": label, "acc": None, "ci": None, "n": n or 0}
    low, high = wilson_interval(round(acc * n), n)
    return {"label": label, "acc": acc, "ci": [round(low, 4), round(high, 4)], "n": n}


def _round(summary: dict[str, Any] | None, index: int) -> dict[str, Any]:
    rounds = (summary or {}).get("rounds") or []
    return rounds[index] if index < len(rounds) else {}


def _eval_figure(label: str, entry: dict[str, Any], key: str) -> dict[str, Any]:
    return figure(label, entry.get(f"{key}_acc"), entry.get("eval_n"))


def _ordering(figures: list[dict[str, Any]], strict: bool = True) -> dict[str, Any]:
    """Whether ``figures`` are in decreasing order (non-increasing when not ``strict``), and
    whether each step down is beyond the intervals."""
    measured = [f for f in figures if f["acc"] is not None]
    if len(measured) < len(figures) or len(figures) < 2:
        return {"holds": None, "beyond_intervals": None, "ties": None}
    pairs = list(itertools.pairwise(figures))
    holds = all(a["acc"] > b["acc"] if strict else a["acc"] >= b["acc"] for a, b in pairs)
    if len(figures) > 2:  # a flat series (rounds) does not reproduce a gain
        holds = holds and figures[0]["acc"] > figures[-1]["acc"]
    beyond = holds and all(a["ci"][0] > b["ci"][1] for a, b in pairs)
    ties = any(a["acc"] == b["acc"] for a, b in pairs)
    return {"holds": holds, "beyond_intervals": beyond, "ties": ties}


def _figures(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each comparison's figures, from the arms' summaries."""
    main = summaries.get("self")
    last = max(0, len((main or {}).get("rounds") or []) - 1)
    first, final, at = _round(main, 1), _round(main, last), min(2, last)
    return {
        "last": last,
        "strategy_round": at,
        "kept": [
            figure("kept answers", first.get("kept_acc"), first.get("kept")),
            figure("all answers", first.get("all_acc"), first.get("generated")),
        ],
        "trained": [
            _eval_figure("trained on kept answers", first, "direct"),
            _eval_figure(
                "trained on all answers", _round(summaries.get("unfiltered"), 1), "direct"
            ),
        ],
        "rounds": [_eval_figure(f"round {i}", _round(main, i), "direct") for i in range(last + 1)],
        "strategy": [
            _eval_figure("restart", _round(summaries.get("restart"), at), "direct"),
            _eval_figure("continual + meta replay", _round(main, at), "direct"),
            _eval_figure("continual alone", _round(summaries.get("continual_alone"), at), "direct"),
        ],
        "inference": [
            _eval_figure("self-refined", final, "refine"),
            _eval_figure("direct", final, "direct"),
        ],
        "consistency": [
            _eval_figure("self-consistency", final, "sc"),
            _eval_figure("self-consistency of refined answers", final, "sc_refine"),
        ],
        "meta": [
            _eval_figure("QA + meta-skill data", _round(main, 0), "direct"),
            _eval_figure("QA only", _round(summaries.get("qa_only"), 0), "direct"),
        ],
    }


def comparisons(summaries: dict[str, dict[str, Any]], recipe: str = "self") -> list[dict[str, Any]]:
    """The paper's comparisons from the arms' summaries, each with the paper's finding and
    whether the demo reproduces its ordering."""
    if recipe not in RECIPES:
        raise ValueError(f"selfevo ablate knows the ablations of {list(RECIPES)}, not {recipe!r}")
    if recipe == "mistake_analysis":
        return _mistake_comparisons(summaries)
    f = _figures(summaries)
    return [
        _comparison(
            "self-filter: accuracy of round 1's self-generated answers",
            f["kept"],
            "filtered 44.10% vs unfiltered 27.11% correct",
            _ordering(f["kept"]),
        ),
        _comparison(
            "self-filter: round 1's model (held-out direct)",
            f["trained"],
            "training on filtered data beats unfiltered",
            _ordering(f["trained"]),
        ),
        _comparison(
            "rounds (held-out direct)",
            f["rounds"],
            "25.39 -> 27.67 -> 28.66 -> 29.64 over three rounds",
            _ordering(list(reversed(f["rounds"])), strict=False),
        ),
        _comparison(
            f"training strategy (round {f['strategy_round']}, held-out direct)",
            f["strategy"],
            "restart 27.67 > continual with meta-skill data 27.22 > continual alone 24.87",
            _ordering(f["strategy"]),
        ),
        _comparison(
            f"inference (round {f['last']}): self-refinement vs direct",
            [*f["inference"], *f["consistency"]],
            "self-refinement adds 1.67 points; self-consistency (of first and of refined "
            "answers) reported beside it",
            _ordering(f["inference"], strict=False),
        ),
        _comparison(
            "meta-skill learning (round 0, held-out direct)",
            f["meta"],
            "QA + meta-skill data beats QA only",
            _ordering(f["meta"]),
        ),
    ]


def _mistake_comparisons(summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    main, baseline = summaries.get("analysis"), summaries.get("answers_only")
    last = max(0, len((main or {}).get("rounds") or []) - 1)

    def balanced(label: str, entry: dict[str, Any]) -> dict[str, Any]:
        # Balanced accuracy, not agreement: a check that calls every answer wrong agrees
        # with the gold as often as the model is wrong. Its interval is Wilson's on the
        # judged answers (an approximation for a mean of two recalls).
        return figure(label, entry.get("eval_judge_balanced"), entry.get("eval_judged"))

    arms_at_last = (("with the analyses", main), ("own answers alone", baseline))
    direct = [_eval_figure(label, _round(s, last), "direct") for label, s in arms_at_last]
    checks = [balanced(label, _round(s, last)) for label, s in arms_at_last]
    rounds = [_eval_figure(f"round {i}", _round(main, i), "direct") for i in range(last + 1)]
    return [
        _comparison(
            f"mistake analysis: round {last}'s model (held-out direct)",
            direct,
            "learning from analysed mistakes beats learning from good answers alone",
            _ordering(direct),
        ),
        _comparison(
            f"mistake analysis: round {last}'s check of its own answers (balanced accuracy)",
            checks,
            "the analyses teach the model to find mistakes",
            _ordering(checks),
        ),
        _comparison(
            "mistake analysis: rounds (held-out direct)",
            rounds,
            "gains over rounds",
            _ordering(list(reversed(rounds)), strict=False),
        ),
    ]


def _comparison(
    name: str, figures: list[dict[str, Any]], paper: str, ordering: dict[str, Any]
) -> dict[str, Any]:
    return {"comparison": name, "figures": figures, "paper": paper, **ordering}


def _cell(fig: dict[str, Any]) -> str:
    if fig["acc"] is None:
        return f"{fig['label']}: not measured"
    low, high = fig["ci"]
    return f"{fig['label']} {fig['acc']:.3f} [{low:.3f}, {high:.3f}]"


def _verdict(row: dict[str, Any]) -> str:
    if row["holds"] is None:
        return "not measured"
    if not row["holds"]:
        return "**differs from the paper**"
    if row["ties"]:
        return "holds only with ties"
    return (
        "holds, beyond the intervals" if row["beyond_intervals"] else "holds, within the intervals"
    )


def markdown(rows: list[dict[str, Any]]) -> str:
    """The comparisons as a markdown table (figures with their 95% intervals)."""
    lines = [
        "| comparison | demo (95% CI) | paper | paper's ordering |",
        "|---|---|---|---|",
    ]
    for row in rows:
        figures = "<br>".join(_cell(f) for f in row["figures"])
        lines.append(f"| {row['comparison']} | {figures} | {row['paper']} | {_verdict(row)} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Any) -> None:
    """One panel per comparison: each figure as a point with its 95% interval, on an axis
    framed to the panel's data (matplotlib imported only here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(7, 1.6 * len(rows) + 0.6), squeeze=False)
    for ax, row in zip(axes[:, 0], rows, strict=True):
        measured = [f for f in row["figures"] if f["acc"] is not None]
        for y, fig_ in enumerate(measured):
            low, high = fig_["ci"]
            ax.errorbar(fig_["acc"], y, xerr=[[fig_["acc"] - low], [high - fig_["acc"]]], fmt="o")
        ax.set_yticks(range(len(measured)), [f["label"] for f in measured], fontsize=7)
        ax.set_title(row["comparison"], fontsize=8)
        if measured:
            low = min(f["ci"][0] for f in measured)
            high = max(f["ci"][1] for f in measured)
            pad = max(0.01, 0.1 * (high - low))
            ax.set_xlim(max(0.0, low - pad), min(1.0, high + pad))
        ax.tick_params(axis="x", labelsize=7)
    axes[-1, 0].set_xlabel("accuracy (95% CI)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
