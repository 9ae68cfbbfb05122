"""The recipe registry: every step a recipe declares has a handler, every config name a
recipe, and the run context the handlers are written against is all they use."""

from __future__ import annotations

import ast
import inspect

import pytest

from selfevo.config import RecipeName, load_config
from selfevo.recipes import RECIPES, RunContext, mistake_analysis, recipe_named, self_refine, steps
from selfevo.recipes import isheep as isheep_recipe

CONFIGS = {
    "self": "demo",
    "isheep": "recipes/isheep_demo",
    "mistake_analysis": "recipes/mistake_analysis_demo",
}


def test_every_config_recipe_name_is_registered():
    assert set(RECIPES) == {name.value for name in RecipeName}
    with pytest.raises(ValueError, match="unknown recipe 'dpo'"):
        recipe_named("dpo")


@pytest.mark.parametrize("name", sorted(RECIPES))
@pytest.mark.parametrize("warmup", [True, False])
def test_every_step_a_recipe_declares_has_a_handler(name, warmup):
    recipe = RECIPES[name]
    overrides = ["recipe.rounds=2"] + ([] if name == "self" else [f"recipe.skills_warmup={warmup}"])
    config = load_config(CONFIGS[name], overrides)
    planned = recipe.steps(config)
    assert planned[-1] == "report" and "round2.eval" in planned
    for step in planned:
        handler, index = recipe.handler(step)
        assert callable(handler)
        assert index == (int(step[5]) if step.startswith("round") else 0)
    assert set(recipe.round_steps) <= set(recipe.handlers)


def test_a_step_without_a_handler_is_named():
    with pytest.raises(KeyError, match=r"no handler for step 'round1\.critique'"):
        RECIPES["isheep"].handler("round1.critique")


def test_only_self_always_has_meta_steps():
    off = ["recipe.skills_warmup=false"]
    assert RECIPES["self"].has_meta(load_config("demo", off))
    assert not RECIPES["isheep"].has_meta(load_config("recipes/isheep_demo", off))


@pytest.mark.parametrize("module", [steps, self_refine, isheep_recipe, mistake_analysis])
def test_handlers_ask_the_context_only_for_what_it_declares(module):
    declared = {
        name for name, _ in inspect.getmembers(RunContext) if not name.startswith("_")
    } | set(RunContext.__annotations__)
    used = {
        node.attr
        for node in ast.walk(ast.parse(inspect.getsource(module)))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "ctx"
    }
    assert used and used <= declared, used - declared


@pytest.mark.parametrize("module", [self_refine, isheep_recipe, mistake_analysis])
def test_recipe_modules_stay_short(module):
    assert len(inspect.getsource(module).splitlines()) < 200
