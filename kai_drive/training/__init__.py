"""Training: recipes (``agents/*.yaml``), env stacks, callbacks, run folders and evaluation helpers.

The CLI is :mod:`kai_drive.train` (``python -m kai_drive.train --env lane-keep``); see docs/training.md.
"""

from kai_drive.training.algos import ALGOS
from kai_drive.training.recipe import Recipe, RecipeError, load_recipe, parse_set

__all__ = ["ALGOS", "Recipe", "RecipeError", "load_recipe", "parse_set"]
