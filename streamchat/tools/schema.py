"""JSON Schema for a tool's parameters, from its signature and type hints; and the check of the
model's arguments against it.

Supported hints: ``str``, ``int``, ``float``, ``bool``, ``Literal[...]``, an ``Enum``,
``list[...]`` (and ``tuple[X, ...]``), ``dict``, ``Optional[X]`` / ``X | None``; a default makes
a parameter optional. A parameter named ``user`` is the acting user: injected, never in the
schema. The checker knows exactly the subset built here (no dependency on ``jsonschema``).
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union

USER_PARAMETER = "user"


def describe(func: Callable[..., Any]) -> tuple[dict[str, Any], bool]:
    """(the parameters' JSON Schema, whether ``func`` asks for the acting user)."""
    signature = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # an unresolvable annotation: treat it as "any"
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    wants_user = False
    for name, parameter in signature.parameters.items():
        if name == USER_PARAMETER:
            wants_user = True
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        prop = type_schema(hints.get(name, Any))
        if parameter.default is parameter.empty:
            required.append(name)
        elif _jsonable(parameter.default):
            prop["default"] = (
                parameter.default.value
                if isinstance(parameter.default, enum.Enum)
                else parameter.default
            )
        properties[name] = prop
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema, wants_user


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | enum.Enum)


def type_schema(hint: Any) -> dict[str, Any]:
    if hint is Any or hint is inspect.Parameter.empty:
        return {}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        options = [a for a in args if a is not type(None)]
        inner = (
            type_schema(options[0])
            if len(options) == 1
            else {"anyOf": [type_schema(a) for a in options]}
        )
        if type(None) in args:
            return {"anyOf": [inner, {"type": "null"}]}
        return inner
    if origin is Literal:
        values = list(args)
        schema: dict[str, Any] = {"enum": values}
        kinds = {_json_type(type(v)) for v in values}
        if len(kinds) == 1 and None not in kinds:
            schema["type"] = kinds.pop()
        return schema
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        values = [member.value for member in hint]
        schema = {"enum": values}
        kinds = {_json_type(type(v)) for v in values}
        if len(kinds) == 1 and None not in kinds:
            schema["type"] = kinds.pop()
        return schema
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple, set, frozenset):
        item = args[0] if args and args[0] is not Ellipsis else Any
        return {"type": "array", "items": type_schema(item)}
    if origin is dict or hint is dict:
        return {"type": "object"}
    kind = _json_type(hint)
    return {"type": kind} if kind else {}


def _json_type(kind: Any) -> str | None:
    if kind is bool:
        return "boolean"
    if kind is int:
        return "integer"
    if kind is float:
        return "number"
    if kind is str:
        return "string"
    return None


def check(schema: dict[str, Any], value: Any, path: str = "arguments") -> str | None:
    """Why ``value`` does not fit ``schema`` (a message for the model), or None when it fits."""
    if "anyOf" in schema:
        if any(check(option, value, path) is None for option in schema["anyOf"]):
            return None
        return f"{path} has the wrong type."
    if "enum" in schema and value not in schema["enum"]:
        return f"{path} must be one of {schema['enum']}."
    kind = schema.get("type")
    if kind is None:
        return None
    fits = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "null": value is None,
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }.get(kind, True)
    if not fits:
        return f"{path} must be of type {kind}."
    if kind == "array":
        for index, item in enumerate(value):
            problem = check(schema.get("items", {}), item, f"{path}[{index}]")
            if problem:
                return problem
    if kind == "object":
        properties = schema.get("properties")
        for name in schema.get("required", ()):
            if name not in value:
                return f"{path}.{name} is required."
        if properties is not None:
            for name, item in value.items():
                if name not in properties:
                    if schema.get("additionalProperties") is False:
                        return f"{path}.{name} is not a parameter."
                    continue
                problem = check(properties[name], item, f"{path}.{name}")
                if problem:
                    return problem
    return None


def coerce(func: Callable[..., Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments as the function's hints want them: an ``Enum`` member from its value, a tuple
    or set from a list."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        return arguments
    result = dict(arguments)
    for name, value in arguments.items():
        hint = hints.get(name)
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) in (Union, types.UnionType) and len(options) == 1:
            hint = options[0]
        if isinstance(hint, type) and issubclass(hint, enum.Enum) and value is not None:
            result[name] = hint(value)
        elif isinstance(value, list):
            container = typing.get_origin(hint)
            if container in (tuple, set, frozenset):
                result[name] = container(value)
    return result
