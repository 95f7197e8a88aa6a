"""Tools, tool_choice, response_format and search_options: wire fields -> core types (spec §1.3 #12,
#29–#33, §4.6–§4.8)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from qwenhost.api.wire.values import INVALID_PARAMETERS, read_bool
from qwenhost.core.errors import InvalidParameter
from qwenhost.core.types import NamedToolChoice, ResponseFormat, SearchOptions, ToolChoice, ToolSpec

UNKNOWN_RESPONSE_FORMAT = (
    "Unknown format of response_format, response_format should be a dict, includes 'type' and an "
    "optional key 'json_schema'. The response_format type from user is {}."
)
BAD_TOOL_CHOICE = 'tool_choice is one of the strings that should be ["none", "auto"]'
# A function or schema name: ASCII letters, digits, '_' and '-', at most 64 characters (the OpenAI rule
# that DashScope's reference repeats for tool names, spec §1.3 #29).
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
SEARCH_STRATEGIES = ("turbo", "max", "agent", "agent_max")


def read_tools(raw: Any) -> tuple[ToolSpec, ...]:
    """``tools``. A missing ``description`` is read as empty: DashScope's reference marks it required,
    but OpenAI clients omit it and the model only sees less (docs/compatibility.md)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidParameter(INVALID_PARAMETERS)
    tools = []
    for item in raw:
        function = item.get("function") if isinstance(item, Mapping) else None
        if not isinstance(function, Mapping) or item.get("type", "function") != "function":
            raise InvalidParameter(INVALID_PARAMETERS)
        name = function.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise InvalidParameter(INVALID_PARAMETERS)
        if name == "search":
            raise InvalidParameter("Tool names are not allowed to be [search]")
        parameters = function.get("parameters") or {}
        description = function.get("description")
        if not isinstance(parameters, Mapping) or not isinstance(description, str | None):
            raise InvalidParameter(INVALID_PARAMETERS)
        tools.append(ToolSpec(name=name, description=description or "", parameters=parameters))
    return tuple(tools)


def read_tool_choice(raw: Any, tools: tuple[ToolSpec, ...]) -> ToolChoice:
    if raw is None:
        return "auto"
    if isinstance(raw, str):
        if raw in ("auto", "none", "required"):
            return raw  # type: ignore[return-value]
        raise InvalidParameter(BAD_TOOL_CHOICE)
    if isinstance(raw, Mapping):
        function = raw.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if raw.get("type", "function") == "function" and isinstance(name, str):
            if not any(t.name == name for t in tools):
                raise InvalidParameter(f"tool_choice names the function '{name}', which is not in tools.")
            return NamedToolChoice(name)
    raise InvalidParameter(BAD_TOOL_CHOICE)


def read_response_format(raw: Any) -> ResponseFormat | None:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, Mapping) else raw
    if not isinstance(raw, Mapping) or kind not in ("text", "json_object", "json_schema"):
        raise InvalidParameter(UNKNOWN_RESPONSE_FORMAT.format(kind))
    if kind != "json_schema":
        return ResponseFormat(type=kind)
    spec = raw.get("json_schema")
    if not isinstance(spec, Mapping):
        raise InvalidParameter(UNKNOWN_RESPONSE_FORMAT.format(kind))
    name = spec.get("name")
    if name is not None and (not isinstance(name, str) or not NAME.fullmatch(name)):
        raise InvalidParameter("json_schema.name must be letters, digits, '_' or '-', at most 64 characters.")
    schema = spec.get("schema")
    if schema is not None and not isinstance(schema, Mapping):
        raise InvalidParameter("json_schema.schema must be a JSON Schema object.")
    strict = spec.get("strict", raw.get("strict", False))  # accepted inside or beside json_schema (spec §7.9)
    if not isinstance(strict, bool):
        raise InvalidParameter("'strict' must be Boolean")
    description = spec.get("description")
    return ResponseFormat(
        type="json_schema",
        schema=schema,
        name=name,
        strict=strict,
        description=description if isinstance(description, str) else None,
    )


def read_search_options(raw: Any) -> SearchOptions | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidParameter("'search_options' must be an object")
    strategy = raw.get("search_strategy", "turbo")
    if strategy not in SEARCH_STRATEGIES:
        raise InvalidParameter("search_options.search_strategy must be one of turbo, max, agent, agent_max")
    return SearchOptions(
        forced_search=read_bool(raw, "forced_search"),
        search_strategy=strategy,
        enable_search_extension=read_bool(raw, "enable_search_extension"),
        enable_source=read_bool(raw, "enable_source"),
    )
