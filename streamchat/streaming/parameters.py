"""The OpenRouter chat parameters an OpenAI-compatible request may set: checked here, then sent
upstream exactly as the client wrote them (``Options.extra``, carried by the plan to
``ChatRequest.extra_body``).

Guarantees:

- Every field of a request body is either read by the endpoint (``model``, ``messages``,
  ``stream``, ``stream_options``, ``n``, ``temperature``, ``max_tokens``,
  ``max_completion_tokens``), checked here and passed on, or refused with a 400 naming it. Nothing
  is dropped silently: a client asking for JSON never gets prose without an error.
- A value of the wrong type or out of range is a 400 naming the parameter (``param`` of the
  OpenAI error, e.g. ``tools[0].function.name``), before any database work or upstream call.
- ``null`` means "not set" (some clients send every field): it is neither checked nor sent.
- ``models`` (a fallback list) is returned apart: the plan checks that each is an enabled model,
  as for ``model``, since any of them may answer and be billed.

docs/http.md lists the parameters, and what is refused and why.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import ChatError

# Read by the endpoint itself (openai_compat, engine.validate_options), not passed through here.
READ_BY_ENDPOINT = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "n",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
    }
)

# Fields OpenAI or OpenRouter know that this server cannot honour, with the reason given.
_OLD_FUNCTIONS = (
    "functions and function_call are OpenAI's deprecated interface: use tools and tool_choice."
)
_TEXT_ONLY = "Only text replies are supported."
REFUSED = {
    "functions": _OLD_FUNCTIONS,
    "function_call": _OLD_FUNCTIONS,
    "extra_body": (
        "extra_body is an SDK argument: the SDK merges its fields into the request body, so send "
        "them at the top level."
    ),
    "logprobs": "Log probabilities are not relayed by this server.",
    "top_logprobs": "Log probabilities are not relayed by this server.",
    "modalities": _TEXT_ONLY,
    "audio": _TEXT_ONLY,
    "prediction": "Predicted outputs are not supported.",
    "store": "Stored completions are OpenAI's; this server does not offer them.",
    "metadata": "Request metadata is not supported.",
    "service_tier": "Service tiers are OpenAI's; OpenRouter routes by provider instead.",
    "web_search_options": "Web search is not offered by this server.",
    "plugins": "OpenRouter plugins (web search, file parsing) are not offered by this server.",
    "prompt": "Use messages: this is the chat completions endpoint.",
}

MAX_TOOLS = 128
MAX_STOP = 4
MAX_LOGIT_BIAS = 1024
MAX_FALLBACK_MODELS = 16
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN_ID = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True, slots=True)
class Parameters:
    """What a request asks of upstream beyond its messages: ``extra`` is sent as is, ``models``
    is a fallback list still to check against the enabled models (None: not asked for)."""

    extra: dict[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] | None = None


def validate(body: dict[str, Any]) -> Parameters:
    """The passthrough parameters of an OpenAI-compatible request ``body``; ``ChatError``
    (``invalid``, ``field`` naming the parameter) for a bad value, an unknown field or one this
    server cannot honour."""
    extra: dict[str, Any] = {}
    models: tuple[str, ...] | None = None
    for name, value in body.items():
        if name in READ_BY_ENDPOINT or value is None:
            continue
        if name == "models":
            models = _models(value)
            continue
        if name == "logprobs" and value is False:
            continue  # asks for nothing (some clients send it always)
        check = CHECKS.get(name)
        if check is None:
            reason = REFUSED.get(name, f"Unrecognized request argument supplied: {name}.")
            raise ChatError("invalid", reason, field=name)
        check(value, name)
        extra[name] = value
    _check_tool_use(body)
    return Parameters(extra, models)


# -- checks ------------------------------------------------------------------------------------


def _invalid(name: str, message: str) -> ChatError:
    return ChatError("invalid", f"{name} {message}", field=name)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(low: float, high: float, *, low_open: bool = False) -> Callable[[Any, str], None]:
    def check(value: Any, name: str) -> None:
        if (
            not _is_number(value)
            or value != value  # NaN
            or value > high
            or value < low
            or (low_open and value == low)
        ):
            bound = f"above {low:g}" if low_open else f"from {low:g}"
            raise _invalid(name, f"must be a number {bound} to {high:g}.")

    return check


def _integer(low: int, high: int) -> Callable[[Any, str], None]:
    def check(value: Any, name: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _invalid(name, f"must be a whole number from {low} to {high}.")

    return check


def _boolean(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise _invalid(name, "must be true or false.")


def _string(max_length: int) -> Callable[[Any, str], None]:
    def check(value: Any, name: str) -> None:
        if not isinstance(value, str) or not 1 <= len(value) <= max_length:
            raise _invalid(name, f"must be a string of 1 to {max_length} characters.")

    return check


def _strings(max_items: int, max_length: int) -> Callable[[Any, str], None]:
    def check(value: Any, name: str) -> None:
        if not isinstance(value, list) or len(value) > max_items:
            raise _invalid(name, f"must be a list of at most {max_items} strings.")
        for index, item in enumerate(value):
            _string(max_length)(item, f"{name}[{index}]")

    return check


def _object(value: Any, name: str, known: dict[str, Callable[[Any, str], None]]) -> None:
    """An object whose keys are all ``known``, each value checked (null: not set)."""
    if not isinstance(value, dict):
        raise _invalid(name, "must be an object.")
    for key, item in value.items():
        check = known.get(key)
        if check is None:
            raise ChatError(
                "invalid",
                f"{name}.{key} is not a known field of {name} (known: {', '.join(known)}).",
                field=f"{name}.{key}",
            )
        if item is not None:
            check(item, f"{name}.{key}")


def _one_of(*choices: str) -> Callable[[Any, str], None]:
    def check(value: Any, name: str) -> None:
        if value not in choices:
            raise _invalid(name, f"must be one of {', '.join(choices)}.")

    return check


def _json_object(value: Any, name: str) -> None:
    if not isinstance(value, dict):
        raise _invalid(name, "must be an object (a JSON Schema).")


def _stop(value: Any, name: str) -> None:
    if isinstance(value, str):
        if not value:
            raise _invalid(name, "must not be empty.")
        return
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_STOP:
        raise _invalid(name, f"must be a string or a list of 1 to {MAX_STOP} strings.")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise _invalid(f"{name}[{index}]", "must be a non-empty string.")


def _logit_bias(value: Any, name: str) -> None:
    if not isinstance(value, dict) or len(value) > MAX_LOGIT_BIAS:
        raise _invalid(name, f"must be an object of at most {MAX_LOGIT_BIAS} token ids.")
    for token, bias in value.items():
        if not _TOKEN_ID.fullmatch(token):
            raise _invalid(name, f"keys must be token ids (whole numbers), not {token[:20]!r}.")
        _number(-100, 100)(bias, f"{name}.{token}")


def _response_format(value: Any, name: str) -> None:
    kinds = _one_of("text", "json_object", "json_schema")
    _object(value, name, {"type": kinds, "json_schema": _json_schema})
    kind = value.get("type")
    if kind is None:
        raise _invalid(f"{name}.type", "is required: text, json_object or json_schema.")
    if kind == "json_schema" and not isinstance(value.get("json_schema"), dict):
        raise _invalid(f"{name}.json_schema", "is required with type json_schema.")
    if kind != "json_schema" and value.get("json_schema") is not None:
        raise _invalid(f"{name}.json_schema", "goes only with type json_schema.")


def _json_schema(value: Any, name: str) -> None:
    _object(
        value,
        name,
        {
            "name": _function_name,
            "description": _string(4096),
            "schema": _json_object,
            "strict": _boolean,
        },
    )
    if "name" not in value:
        raise _invalid(f"{name}.name", "is required.")


def _function_name(value: Any, name: str) -> None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _invalid(name, "must be 1 to 64 letters, digits, _ or -.")


def _tools(value: Any, name: str) -> None:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_TOOLS:
        raise _invalid(name, f"must be a list of 1 to {MAX_TOOLS} tools.")
    seen: set[str] = set()
    for index, tool in enumerate(value):
        at = f"{name}[{index}]"
        _object(tool, at, {"type": _one_of("function"), "function": _function})
        if tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise _invalid(at, 'must be {"type": "function", "function": {...}}.')
        if "name" not in tool["function"]:
            raise _invalid(f"{at}.function.name", "is required.")
        if tool["function"]["name"] in seen:
            raise _invalid(f"{at}.function.name", "repeats an earlier tool's name.")
        seen.add(tool["function"]["name"])


def _function(value: Any, name: str) -> None:
    _object(
        value,
        name,
        {
            "name": _function_name,
            "description": _string(4096),
            "parameters": _json_object,
            "strict": _boolean,
        },
    )


def _tool_choice(value: Any, name: str) -> None:
    if isinstance(value, str):
        _one_of("none", "auto", "required")(value, name)
        return
    _object(value, name, {"type": _one_of("function"), "function": _named})
    if value.get("type") != "function" or not isinstance(value.get("function"), dict):
        raise _invalid(
            name, 'must be none, auto, required or {"type": "function", "function": {"name"}}.'
        )


def _named(value: Any, name: str) -> None:
    _object(value, name, {"name": _function_name})
    if "name" not in value:
        raise _invalid(f"{name}.name", "is required.")


def _check_tool_use(body: dict[str, Any]) -> None:
    """``tool_choice`` and ``parallel_tool_calls`` need ``tools``; a named choice one of them."""
    tools = body.get("tools")
    for name in ("tool_choice", "parallel_tool_calls"):
        if body.get(name) is not None and not tools:
            raise _invalid(name, "needs tools.")
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        wanted = choice["function"]["name"]
        if wanted not in {tool["function"]["name"] for tool in tools or ()}:
            raise _invalid("tool_choice.function.name", f"names no tool of the request ({wanted}).")


def _string_or_object(choices: tuple[str, ...]) -> Callable[[Any, str], None]:
    def check(value: Any, name: str) -> None:
        if isinstance(value, str):
            _one_of(*choices)(value, name)
        elif not isinstance(value, dict):
            raise _invalid(name, f"must be one of {', '.join(choices)}, or an object.")

    return check


def _number_or_object(value: Any, name: str) -> None:
    if not (_is_number(value) and value >= 0) and not isinstance(value, dict):
        raise _invalid(name, "must be a number of at least 0, or an object.")


def _prices(value: Any, name: str) -> None:
    price = _price
    _object(
        value,
        name,
        {"prompt": price, "completion": price, "image": price, "audio": price, "request": price},
    )


def _price(value: Any, name: str) -> None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _invalid(name, "must be a price in USD per million tokens.") from None
    _number(0, 1_000_000)(value, name)


def _provider(value: Any, name: str) -> None:
    """OpenRouter's provider routing preferences (its docs' "Provider Routing")."""
    slugs = _strings(64, 128)
    _object(
        value,
        name,
        {
            "order": slugs,
            "only": slugs,
            "ignore": slugs,
            "quantizations": slugs,
            "allow_fallbacks": _boolean,
            "require_parameters": _boolean,
            "data_collection": _one_of("allow", "deny"),
            "zdr": _boolean,
            "enforce_distillable_text": _boolean,
            "sort": _string_or_object(("price", "throughput", "latency")),
            "max_price": _prices,
            "preferred_min_throughput": _number_or_object,
            "preferred_max_latency": _number_or_object,
        },
    )


def _reasoning(value: Any, name: str) -> None:
    _object(
        value,
        name,
        {
            "effort": _one_of("xhigh", "high", "medium", "low", "minimal", "none"),
            "max_tokens": _integer(1, 1_000_000),
            "exclude": _boolean,
            "enabled": _boolean,
        },
    )


def _usage(value: Any, name: str) -> None:
    _object(value, name, {"include": _boolean})


def _models(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_FALLBACK_MODELS:
        raise _invalid("models", f"must be a list of 1 to {MAX_FALLBACK_MODELS} model ids.")
    for index, item in enumerate(value):
        _string(200)(item, f"models[{index}]")
    return tuple(value)


CHECKS: dict[str, Callable[[Any, str], None]] = {
    "top_p": _number(0, 1),
    "top_k": _integer(0, 1_000_000),
    "seed": _integer(-(2**63), 2**63 - 1),
    "stop": _stop,
    "frequency_penalty": _number(-2, 2),
    "presence_penalty": _number(-2, 2),
    "repetition_penalty": _number(0, 2, low_open=True),
    "min_p": _number(0, 1),
    "top_a": _number(0, 1),
    "logit_bias": _logit_bias,
    "response_format": _response_format,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "parallel_tool_calls": _boolean,
    "provider": _provider,
    "reasoning": _reasoning,
    "usage": _usage,
    "user": _string(256),
    "transforms": _strings(8, 64),
}
