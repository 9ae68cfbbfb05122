"""The task registry: the tasks that add hooks to the general machinery, registered here.

Only this module imports a task's package (:mod:`selfevo.division_world` and
:mod:`selfevo.demo_world`, the demo's division and arithmetic worlds); a task's package imports
:mod:`selfevo.task_api` only. Everything else asks the registry (:func:`task_named`,
:func:`builtin_data`, :func:`builtin_model`). A new task registers the same way.
"""

from __future__ import annotations

from selfevo import demo_world, division_world
from selfevo.task_api import (
    BUILTIN_DATA,
    BUILTIN_MODELS,
    TASKS,
    BuiltinData,
    BuiltinModel,
    Task,
    builtin_data,
    builtin_model,
    register,
    resolve_model,
    task_named,
)

register(demo_world.WORLD, demo_world.BUILTIN_DATA, demo_world.BUILTIN_MODELS)
register(division_world.WORLD, division_world.BUILTIN_DATA, division_world.BUILTIN_MODELS)

# CLI command groups tasks add (``selfevo demo ...``), by module name: the CLI imports them
# when it builds its parser, so the registry does not load a task's heavier parts.
COMMAND_GROUPS = ("selfevo.cli.demo",)

__all__ = [
    "BUILTIN_DATA",
    "BUILTIN_MODELS",
    "COMMAND_GROUPS",
    "TASKS",
    "BuiltinData",
    "BuiltinModel",
    "Task",
    "builtin_data",
    "builtin_model",
    "register",
    "resolve_model",
    "task_named",
]
