"""JSON Schemas for constrained decoding: output layout, tool-argument tightening, and the 400 for schemas
that llguidance cannot enforce (a constraint is never silently dropped)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import llguidance

from qwenhost.core.errors import InvalidParameter

# One line, json.dumps-style separators: the layout Qwen models were trained on (the templates render tool
# arguments with tojson), and no free whitespace, so a small model cannot pad an answer with blank lines.
JSON_LAYOUT: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

ANY_OBJECT: dict[str, Any] = {"type": "object"}
NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}

_COMBINATORS = ("allOf", "anyOf", "oneOf", "$ref", "not", "if")
_OPEN_KEYS = ("additionalProperties", "patternProperties", "unevaluatedProperties")
_UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[(.*?)\]")


# An integer the schema leaves unbounded gets at most 18 digits: it fits int64 (what JSON parsers of every
# language read exactly), and a small model that starts repeating a digit stops within a few tokens instead
# of filling the context (docs/tools-and-structured-output.md). A schema's own bounds win.
INTEGER_BOUND = 10**18 - 1
_BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_SUBSCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMAS = ("items", "additionalProperties", "not", "if", "then", "else", "contains")


def with_layout(schema: Mapping[str, Any] | bool) -> dict[str, Any]:
    """The schema with llguidance's layout options attached (``x-guidance`` is read by ``%json``) and its
    unbounded integers bounded."""
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    return {**bound_integers(schema), "x-guidance": JSON_LAYOUT}


def bound_integers(node: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``node`` whose integer schemas without a lower or upper bound get ±INTEGER_BOUND there."""
    out = dict(node)
    kinds = out.get("type")
    if kinds == "integer" or (isinstance(kinds, list) and "integer" in kinds and "number" not in kinds):
        if "minimum" not in out and "exclusiveMinimum" not in out:
            out["minimum"] = -INTEGER_BOUND
        if "maximum" not in out and "exclusiveMaximum" not in out:
            out["maximum"] = INTEGER_BOUND
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [bound_integers(v) if isinstance(v, Mapping) else v for v in out[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), Mapping):
            out[key] = {k: bound_integers(v) if isinstance(v, Mapping) else v for k, v in out[key].items()}
    for key in _SUBSCHEMAS:
        if isinstance(out.get(key), Mapping):
            out[key] = bound_integers(out[key])
    return out


def tool_arguments_schema(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A tool's ``parameters`` as the schema its arguments are generated from.

    ``{}`` means "no arguments" (spec §1.3 #29), so the call gets ``{}``. Objects that list their
    properties and say nothing about other keys get ``additionalProperties: false``: the output is
    still valid against the tool's own schema (a subset of it), and a small model cannot wander into
    invented keys. Nodes under combinators or references are left alone, where tightening could make a
    valid combination unsatisfiable.
    """
    if not parameters:
        return dict(NO_ARGUMENTS)
    schema = dict(parameters)
    if "type" not in schema and "properties" in schema:
        schema["type"] = "object"
    return _tighten(schema)


def _tighten(node: dict[str, Any]) -> dict[str, Any]:
    if any(key in node for key in _COMBINATORS):
        return node
    props = node.get("properties")
    if isinstance(props, Mapping):
        node["properties"] = {k: _tighten(dict(v)) if isinstance(v, Mapping) else v for k, v in props.items()}
        required = node.get("required", [])
        is_closed_ok = isinstance(required, list) and all(r in props for r in required)
        if is_closed_ok and not any(k in node for k in _OPEN_KEYS):
            node["additionalProperties"] = False
    items = node.get("items")
    if isinstance(items, Mapping):
        node["items"] = _tighten(dict(items))
    return node


def check_schema(schema: Mapping[str, Any] | bool, where: str) -> None:
    """Raise a 400 naming what llguidance cannot enforce in ``schema`` (found at ``where`` in the request)."""
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(with_layout(schema)))
    except (ValueError, TypeError) as exc:
        raise InvalidParameter(f"{where} is not a valid JSON Schema: {exc}") from None
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, None)
    if is_error:
        raise InvalidParameter(schema_error_message(where, messages[0] if messages else "unknown error"))


def schema_error_message(where: str, detail: str) -> str:
    detail = detail.strip()
    found = _UNIMPLEMENTED.search(detail)
    if found:
        keywords = found.group(1)
        return (
            f"{where} uses JSON Schema keywords that constrained decoding cannot enforce: {keywords}. "
            "Remove them or express the constraint with supported keywords."
        )
    if "oneOf" in detail:
        return (
            f'{where} uses the JSON Schema keyword "oneOf" with alternatives that may overlap, which '
            'constrained decoding cannot enforce; use "anyOf" or make the alternatives disjoint.'
        )
    return f"{where} cannot be enforced by constrained decoding: {detail.splitlines()[0]}"
