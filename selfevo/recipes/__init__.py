"""The self-evolution recipes, each a short module that declares its round's steps and reads
like its paper's loop: :mod:`~selfevo.recipes.self_refine` (SELF),
:mod:`~selfevo.recipes.isheep` (I-SHEEP) and :mod:`~selfevo.recipes.mistake_analysis`.

A recipe is registered here by its ``recipe.name``; the run controller
(``actors.controller``) needs nothing else to run it.
"""

from __future__ import annotations

from selfevo.recipes import isheep, mistake_analysis, self_refine
from selfevo.recipes.base import Recipe, RunContext, StepResult

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe for recipe in (self_refine.RECIPE, isheep.RECIPE, mistake_analysis.RECIPE)
}


def recipe_named(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


__all__ = ["RECIPES", "Recipe", "RunContext", "StepResult", "recipe_named"]
