"""Config fields that carry their own check and, when they are a command-line flag, their help text.

`field(default, check)` declares a frozen-dataclass field; `flag(default, help, check)` declares one that
is also the flag `--name-with-dashes` of `python -m dreamer_actor.agent` (the CLI reads its help, and its
choices from a `choice` check). `check_fields(config)`, called by each config's `__post_init__`, raises
a ValueError naming the config, the field, the flag and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

Check = Callable[[Any], "str | None"]  # what the value should have been, or None when it is fine


def int_at_least(low: int, *, none: bool = False) -> Check:
    """An int (not a bool) >= `low`; `None` too where `none`."""

    def check(value: Any) -> str | None:
        if none and value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            return f"an int >= {low}" + (" or None" if none else "")
        return None

    return check


def number(*, low: float | None = None, high: float | None = None, positive: bool = False) -> Check:
    """A finite int or float (not a bool), `> 0` where `positive`, within `[low, high]` where given."""

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return "a finite number"
        if positive and value <= 0:
            return "> 0"
        if (low is not None and value < low) or (high is not None and value > high):
            return f"in [{low}, {high}]"
        return None

    return check


def choice(values: Sequence[Any], *, none: bool = False) -> Check:
    """One of `values` (`None` too where `none`); the CLI offers `check.choices`."""

    def check(value: Any) -> str | None:
        if (none and value is None) or value in values:
            return None
        return f"one of {tuple(values)}"

    check.choices = tuple(values)  # type: ignore[attr-defined]
    return check


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "True or False"


def text(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "a non-empty string"


def optional_text(value: Any) -> str | None:
    return None if value is None or isinstance(value, str) else "a string or None"


def field(default: Any, check: Check | None = None) -> Any:
    """A config field that `check_fields` checks (no flag of its own)."""
    return dataclasses.field(default=default, metadata={"check": check})


def flag(default: Any, help: str, check: Check | None = None) -> Any:
    """A config field that is also the command-line flag `--name-with-dashes`, with its `--help` text."""
    return dataclasses.field(default=default, metadata={"check": check, "help": help})


def flag_name(name: str) -> str:
    """`"model_lr"` -> `"--model-lr"`."""
    return "--" + name.replace("_", "-")


def is_flag(f: dataclasses.Field) -> bool:
    return "help" in f.metadata


def check_fields(config: Any) -> None:
    """Raises ValueError for the first field of `config` whose value its check refuses."""
    for f in dataclasses.fields(config):
        check = f.metadata.get("check")
        value = getattr(config, f.name)
        expected = check(value) if check is not None else None
        if expected is not None:
            where = f"{type(config).__name__}.{f.name}" + (f": `{flag_name(f.name)}`" if is_flag(f) else "")
            raise ValueError(f"{where} must be {expected}, got {value!r}.")
