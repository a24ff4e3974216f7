"""Checks every options dataclass shares.

NaN passes every range check (each comparison with it is false), so ``guidance_scale=nan`` would
sail through ``0 <= guidance_scale`` and silently mean "no guidance". Options call
:func:`refuse_non_finite` before their own bounds.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, fields
from typing import Any


class OptionError(ValueError):
    """An option value is out of range; ``name`` is the option's field, ``problem`` the rest of the message.

    Kept apart so that a front end can name its own control for the field (the headless command
    says ``--view-size`` where the library says ``view_size``).
    """

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name} {problem}")
        self.name = name
        self.problem = problem


def _default_of(options: Any, name: str) -> Any:
    for field in fields(options):
        if field.name == name:
            return None if field.default is MISSING else field.default
    return None


def refuse_non_finite(options: Any, error: type[Exception] = OptionError) -> None:
    """Raise ``error`` naming the first float field (or float inside a tuple field) that is NaN or infinite."""
    for field in fields(options):
        value = getattr(options, field.name)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, float) and not math.isfinite(item):
                default = _default_of(options, field.name)
                hint = f" (default {default})" if isinstance(default, (int, float)) else ""
                problem = f"is {item}; give a finite number{hint}"
                if issubclass(error, OptionError):
                    raise error(field.name, problem)
                raise error(f"{field.name} {problem}")
