"""Mistake-analysis alignment, the pure part: a round's rows, its filter, what it trains on.

After Chen et al., "Gaining Wisdom from Setbacks: Aligning Large Language Models via Mistake
Analysis": (1) guided mistake induction: the model is asked for a flawed response; (2)
guided analysis: told the response is flawed, the model explains what is wrong; (3)
fine-tuning on the analysis *without* the guidance (the plain analysis prompt with the flawed
response -> the analysis), together with the model's own answers to the same prompts.

Each prompt becomes two rows: ``<prompt>#0`` (the model's own greedy answer) and
``<prompt>#m`` (``meta["kind"] == "mistake"``: induced, then analysed). The filter keeps own
answers as they are (as the paper does) and keeps a mistake row only when the induction
produced an actual departure (its final answer differs from the model's own answer to the
prompt: ``not_a_mistake`` otherwise) and the analysis does not call the response correct
(``analysis_disagrees``). In the demo world the warm-up (``recipe.skills_warmup``) teaches
the two guided forms on oracle-written flawed solutions and the model's own wrong answers.
"""

from __future__ import annotations

from collections.abc import Iterable

from selfevo.evaluation import is_correct
from selfevo.parsers import final_answer, format_number
from selfevo.records import CORRECT, INCORRECT, KEPT, PENDING, Record, Reject
from selfevo.stages import KIND, MISTAKE, analysis_prompt, is_mistake_row
from selfevo.tasks import task_named
from selfevo.templates import answer_messages, build_messages
from selfevo.training import TrainExample, own_answer_replay


def round_rows(prompts: Iterable[Record], round_index: int) -> list[Record]:
    """Two rows per prompt: the model's own answer and an induced mistake."""
    rows = []
    for prompt in prompts:
        for suffix, kind in (("0", "answer"), ("m", MISTAKE)):
            row = Record.from_row(prompt.to_row())
            row.id, row.round = f"{prompt.prompt_id}#{suffix}", round_index
            row.sample_index = 0 if kind == "answer" else 1
            row.meta = {**row.meta, KIND: kind}
            rows.append(row)
    return rows


def _final(record: Record, response: str | None) -> str | None:
    value = final_answer(response, task_named(record.task).strict_answers).value
    return format_number(value) if value is not None else None


def finalize_round(records: list[Record]) -> list[Record]:
    """Apply the round's filter to every pending row (see the module docstring)."""
    own = {r.prompt_id: _final(r, r.response) for r in records if not is_mistake_row(r)}
    for record in records:
        if record.status != PENDING:
            continue
        if not is_mistake_row(record):
            record.keep(record.response or "")
            continue
        answer = _final(record, record.response)
        if answer is not None and answer == own.get(record.prompt_id):
            record.reject(Reject.NOT_A_MISTAKE, f"same final answer {answer} as the own answer")
        elif record.judgement == CORRECT:
            record.reject(Reject.ANALYSIS_DISAGREES, "the analysis calls the response correct")
        else:
            record.keep(record.feedback or "")
    return records


def training_examples(
    records: Iterable[Record], template_set: str = "default", analyses: bool = True
):
    """Own answers (answer prompt -> response) and unguided analyses (analysis prompt with
    the induced response -> the guided analysis); the own answers alone when not
    ``analyses`` (the ablation's baseline)."""
    out = []
    for r in records:
        if r.status != KEPT or not r.final_response:
            continue
        if is_mistake_row(r):
            if not analyses:
                continue
            prompt = analysis_prompt(r, r.response or "", guided=False, template_set=template_set)
            out.append(
                TrainExample(f"{r.id}:analysis", tuple(prompt), r.final_response, "analysis")
            )
        else:
            prompt = answer_messages(r, template_set)
            out.append(TrainExample(r.id, tuple(prompt), r.final_response, "own_answer"))
    return out


def round_quality(records: list[Record]) -> dict[str, float | int | None]:
    """Against gold (where the world has it): own-answer accuracy, how often an induced
    response is really wrong, and the share of analyses that call it incorrect."""
    own = [r for r in records if not is_mistake_row(r) and r.gold is not None]
    mistakes = [r for r in records if is_mistake_row(r) and r.gold is not None]
    kept_mistakes = [r for r in mistakes if r.status == KEPT]

    def share(flags: list[bool]) -> float | None:
        return round(sum(flags) / len(flags), 4) if flags else None

    return {
        "generated": len(records),
        "kept": sum(1 for r in records if r.status == KEPT),
        "kept_answers": sum(1 for r in records if r.status == KEPT and not is_mistake_row(r)),
        "kept_analyses": sum(1 for r in records if r.status == KEPT and is_mistake_row(r)),
        "all_acc": share([bool(is_correct(r, r.response)) for r in own]),
        "kept_acc": share([bool(is_correct(r, r.final_response)) for r in own if r.status == KEPT]),
        "induced_wrong": share([not is_correct(r, r.response) for r in mistakes]),
        "kept_induced_wrong": share([not is_correct(r, r.response) for r in kept_mistakes]),
        "analysis_says_incorrect": share([r.judgement == INCORRECT for r in mistakes]),
    }


# --- the demo world's warm-up -------------------------------------------------------------


def warmup_examples(labeled: list[Record], template_set: str = "default"):
    """Oracle-written examples of the guided forms, from the meta-skill records: induce (the
    question -> a flawed solution) and analyse (the question and a flawed response -> the
    worked solution, ``Given X.`` and ``Judgement: incorrect``), on the oracle's flawed
    solution and, where the model erred itself, on its own wrong answer."""
    out = []
    for record in labeled:
        task = task_named(record.task)
        flawed = task.flawed_solution(record)
        if flawed is None:
            continue
        induce = build_messages(
            "mistake_induce", task=record.task, template_set=template_set, question=record.prompt
        )
        out.append(
            TrainExample(f"{record.prompt_id}:induce", tuple(induce), flawed, "warmup_induce")
        )
        wrong = [flawed]
        if record.response and record.judgement == INCORRECT:
            wrong.append(record.response)
        for k, response in enumerate(wrong):
            critique = task.oracle_critique(record, response)
            if critique is None or critique[0] != INCORRECT:
                continue
            feedback = critique[1]
            prompt = analysis_prompt(record, response, guided=True, template_set=template_set)
            out.append(
                TrainExample(
                    f"{record.prompt_id}:analyze{k}",
                    tuple(prompt),
                    feedback,
                    "warmup_analyze",
                )
            )
    return out + own_answer_replay(labeled, template_set)
