"""How the simulator honours the chat parameters it can show an effect of: JSON mode
(``response_format``), ``seed``, ``stop`` and tool calls (``tools``, ``tool_choice``,
``parallel_tool_calls``). ``max_tokens`` is applied by the run itself (it counts pieces).

Everything here is deterministic for a given request, so tests can assert exact output. Other
parameters are only recorded (``simulator.chat_requests``) and shown by ``simulator/inspect``.
"""

from __future__ import annotations

import json
import random
from typing import Any

from .scenarios import Scenario

SEED_WORDS = (
    "amber bridge cedar delta ember fjord granite harbor iris juniper kestrel lagoon meadow "
    "nimbus orchid pebble quartz river saffron tundra umber violet willow xenon yarrow zephyr"
).split()


def inspect_reply(body: dict[str, Any]) -> str:
    """``simulator/inspect``: the request's fields but its messages, as JSON (sorted keys)."""
    fields = {name: value for name, value in body.items() if name != "messages"}
    return json.dumps(fields, sort_keys=True, ensure_ascii=False)


def seeded(text: str, seed: Any) -> str:
    """With an integer ``seed`` the reply ends with words drawn from it: the same seed gives the
    same reply, another seed (almost always) another one."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        return text
    words = random.Random(seed).sample(SEED_WORDS, 4)
    return f"{text}\n\nSeed {seed}: {' '.join(words)}."


def json_mode(text: str, response_format: Any) -> str:
    """The reply as JSON when ``response_format`` asks for it: ``{"answer": text}`` for
    ``json_object``; for ``json_schema`` an object built from the schema (strings named
    ``answer`` hold the text)."""
    if not isinstance(response_format, dict):
        return text
    kind = response_format.get("type")
    if kind == "json_object":
        return json.dumps({"answer": text}, ensure_ascii=False)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
        return json.dumps(example_value(schema, "answer", 1, answer=text), ensure_ascii=False)
    return text


def cut_at_stop(text: str, stop: Any) -> str:
    """The text before the first stop sequence (which is not part of the reply)."""
    sequences = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    cut = len(text)
    for sequence in sequences:
        if isinstance(sequence, str) and sequence:
            at = text.find(sequence)
            if 0 <= at < cut:
                cut = at
    return text[:cut]


def example_value(schema: Any, key: str, n: int, *, answer: str | None = None) -> Any:
    """A value that fits a JSON Schema (the subset models are given), ``n`` telling calls apart:
    strings are ``"<key> <n>"``, numbers ``n``; ``answer`` fills string properties named answer."""
    if not isinstance(schema, dict):
        return f"{key} {n}"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {
            name: example_value(sub, name, n, answer=answer) for name, sub in properties.items()
        }
    if kind == "array":
        return [example_value(schema.get("items"), key, n, answer=answer)]
    if kind == "integer":
        return n
    if kind == "number":
        return n + 0.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if answer is not None and key == "answer":
        return answer
    return f"{key} {n}"


def tool_calls_for(scenario: Scenario, body: dict[str, Any]) -> list[tuple[str, str]] | None:
    """The calls (name, arguments) the model makes, or None when it answers in text.

    With ``tools`` in the request: when the last message is the user's (or ``tool_choice`` is
    ``required`` or names a function), it calls the named function, else ``call`` of the model
    id, else the first tool, with arguments built from the tool's schema (``args`` of the id
    replaces them). ``parallel=N`` makes N calls (the other tools in turn) unless
    ``parallel_tool_calls`` is false; ``malformed=1`` cuts every call's arguments in half (not
    JSON). After a tool message it answers in text (``tool_result_reply``), unless ``rounds=N``
    asks for N rounds of calls (counted by the assistant messages with ``tool_calls``).
    """
    tools = [
        tool["function"]
        for tool in body.get("tools") or ()
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict)
    ]
    choice = body.get("tool_choice") or "auto"
    if not tools or choice == "none":
        return None
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    forced = choice == "required" or isinstance(choice, dict)
    # ``rounds=N``: after tool results it calls again until it made N rounds of calls.
    rounds = sum(
        1
        for m in messages
        if isinstance(m, dict) and m.get("role") == "assistant" and m.get("tool_calls")
    )
    again = last.get("role") == "tool" and rounds < scenario.int("rounds", 1)
    if last.get("role") != "user" and not forced and not again:
        return None
    schemas = {tool.get("name"): tool.get("parameters") for tool in tools}
    names = [name for name in schemas if isinstance(name, str)]
    function = choice.get("function") if isinstance(choice, dict) else None
    named = function.get("name") if isinstance(function, dict) else None
    first = named or scenario.str("call", "") or names[0]
    count = max(1, scenario.int("parallel", 1))
    if body.get("parallel_tool_calls") is False:
        count = 1
    calls = []
    for index in range(count):
        name = first if index == 0 else names[index % len(names)]
        if index == 0 and "args" in scenario.params:
            arguments = scenario.params["args"]
        else:
            value = example_value(schemas.get(name) or {"type": "object"}, name, index + 1)
            arguments = json.dumps(value, ensure_ascii=False)
        if scenario.flag("malformed", False):
            arguments = arguments[: max(1, len(arguments) // 2)]
        calls.append((name, arguments))
    return calls


def tool_result_reply(messages: list[Any]) -> str | None:
    """After tool messages (the last message is one), a text answer quoting each result; None
    when the last message is not a tool result."""
    results = []
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "tool":
            break
        results.append(message)
    if not results:
        return None
    names: dict[str, str] = {}
    for message in messages:
        if isinstance(message, dict) and isinstance(message.get("tool_calls"), list):
            for call in message["tool_calls"]:
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    names[str(call.get("id"))] = str(call["function"].get("name"))
    lines = []
    for message in reversed(results):
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        name = names.get(str(message.get("tool_call_id")), "unknown")
        lines.append(f"The {name} tool answered: {content}")
    return "\n".join(lines)
