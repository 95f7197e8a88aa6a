"""Where settings come from: each TOML table checked against its config dataclass, every error naming the
file (or the command line) and the key."""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    pass


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


class Source:
    """Where settings come from, so every error names the file (or the command line) and the key."""

    def __init__(self, path: str | None) -> None:
        self.path = path or "the command line"

    def error(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {problem}")

    def table(
        self, raw: Any, cls: type, where: str, internal: Sequence[str] = (), nested: Sequence[str] = ()
    ) -> dict[str, Any]:
        """A TOML table checked against a config dataclass: unknown keys and wrong types are errors.
        ``internal`` fields are not settable from the file; ``nested`` tables are left to the caller."""
        if not isinstance(raw, Mapping):
            raise self.error(where, "must be a table")
        hints = get_type_hints(cls)
        known = [f.name for f in fields(cls) if f.name not in internal]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise self.error(where, f"unknown keys: {', '.join(map(repr, unknown))} (known: {', '.join(known)})")
        return {key: self.value(value, hints[key], f"{where}.{key}") for key, value in raw.items() if key not in nested}

    def value(self, value: Any, hint: Any, where: str) -> Any:
        """``value`` as the field's type (TOML has no null: ``X | None`` takes an X; an integer is a number)."""
        origin, args = get_origin(hint), get_args(hint)
        if origin in (Union, types.UnionType):
            (option,) = [a for a in args if a is not type(None)]
            return self.value(value, option, where)
        if origin is tuple:
            if not isinstance(value, list):
                raise self.error(where, f"must be a list, not {value!r}")
            return tuple(self.value(item, args[0], f"{where}[{i}]") for i, item in enumerate(value))
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if hint is float and is_number:
            return float(value)
        if hint in _TYPE_NAMES and type(value) is hint:
            return value
        raise self.error(where, f"must be {_TYPE_NAMES.get(hint, str(hint))}, not {value!r}")
