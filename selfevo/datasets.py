"""Where a run's prompts come from: the meta-skill set, each round's pool slice, the eval set.

A source is a prompt file (any format :mod:`selfevo.readers` knows) or a ``builtin:`` data
set a task registered (:mod:`selfevo.tasks`): a prompt pool (its ``meta`` split feeds
meta-skill learning, its ``seed`` split I-SHEEP's seed tasks) or a held-out set.

Round ``r`` (1-based) takes prompts ``[(r-1)*k, r*k)`` of the pool, ``k`` =
``data.prompts_per_round``: a fresh slice each round. When the pool is a file and no
``data.meta_train`` file is given, meta-skill learning takes the *last*
``data.meta_examples`` rows of the pool, so rounds (which slice from the front) do not see
them until the pool runs out, which :func:`pool_slice` refuses.
"""

from __future__ import annotations

from selfevo.readers import read_prompts
from selfevo.records import Record
from selfevo.tasks import BUILTIN_DATA, BuiltinData, builtin_data, task_named


class SourceError(ValueError):
    pass


def _is_builtin(source: str) -> bool:
    return source.startswith("builtin:")


def _entry(source: str, heldout: bool = False) -> BuiltinData:
    """The registered data set ``source``; a pool where one is wanted, a held-out set else."""
    try:
        data = builtin_data(source)
    except ValueError as exc:
        raise SourceError(str(exc)) from None
    if data.heldout != heldout:
        wanted = "held-out set" if heldout else "prompt pool"
        others = sorted(n for n, d in BUILTIN_DATA.items() if d.heldout == heldout)
        raise SourceError(f"{source} is not a {wanted}; builtin ones: {', '.join(others)}")
    return data


def _builtin(source: str, split: str, count: int, seed: int, start: int = 0) -> list[Record]:
    return _entry(source, heldout=split == "heldout").make(split, count, seed, start)


def _read(path: str, fmt: str, task: str) -> list[Record]:
    records = read_prompts(path, fmt, task=task).raise_if_bad().records
    for record in records:
        record.task = record.task or task
    return records


def meta_prompts(config) -> list[Record]:
    """The prompts the labeler's meta-skill corpus is written for."""
    data, task, seed = config.data, config.recipe.task, config.run.seed
    if data.meta_train:
        if _is_builtin(data.meta_train):
            return _builtin(data.meta_train, "meta", data.meta_examples, seed)
        return _read(data.meta_train, "auto", task)[: data.meta_examples]
    if _is_builtin(data.prompt_pool):
        return _builtin(data.prompt_pool, "meta", data.meta_examples, seed)
    pool = _read(data.prompt_pool, data.format.value, task)
    return pool[-data.meta_examples :]


def pool_slice(config, round_index: int) -> list[Record]:
    """Round ``round_index``'s fresh prompts (1-based), stamped with the round."""
    data, task, seed = config.data, config.recipe.task, config.run.seed
    per_round = data.prompts_per_round
    start = (round_index - 1) * per_round
    if _is_builtin(data.prompt_pool):
        records = _builtin(data.prompt_pool, "pool", per_round, seed, start)
    else:
        pool = _read(data.prompt_pool, data.format.value, task)
        usable = len(pool) if data.meta_train else len(pool) - data.meta_examples
        if start + per_round > usable:
            raise SourceError(
                f"{data.prompt_pool}: round {round_index} needs prompts {start}-"
                f"{start + per_round - 1} but only {max(usable, 0)} are free for rounds "
                "(lower data.prompts_per_round or recipe.rounds, or add prompts)"
            )
        records = pool[start : start + per_round]
    for record in records:
        record.round = round_index
    return records


def eval_problems(config) -> list[Record]:
    """The held-out evaluation set (the first ``eval.num_problems`` of it)."""
    source, count = config.eval.dataset, config.eval.num_problems
    if _is_builtin(source):
        return _builtin(source, "heldout", count, 0)
    records = _read(source, config.eval.format.value, config.recipe.task)[:count]
    missing = [r.id for r in records if r.gold is None]
    if missing:
        raise SourceError(f"{source}: evaluation needs gold answers; missing for {missing[:5]}")
    return records


def seed_tasks(config) -> list[tuple[str, str]]:
    """(id, text) of I-SHEEP's seed tasks: the first ``data.seed_task_count`` of the source."""
    source, count = config.data.seed_tasks, config.data.seed_task_count
    if _is_builtin(source):
        records = _builtin(source, "seed", count, config.run.seed)
        return [(r.prompt_id, r.prompt) for r in records]
    records = read_prompts(source, "auto", task=config.recipe.task).raise_if_bad().records
    return [(r.prompt_id, r.question_text()) for r in records[:count]]


def synthesized_prompt(text: str, prompt_id: str, task: str, round_index: int) -> Record:
    """A prompt the model wrote, as a record of ``task`` (a registered task may read its gold)."""
    make = task_named(task).prompt_record
    if make is not None:
        record = make(text, prompt_id)
    else:
        record = Record(id=prompt_id, prompt_id=prompt_id, prompt=text, task=task)
        record.source = "synthesized"
    record.round = round_index
    return record
