"""Scenario control: a model id under ``simulator/`` picks a behaviour, its query string the knobs.

``simulator/stall?after=10&comments=1`` streams ten tokens, then only keep-alive comments. The
whole id (query included) is what a client sends as ``model``; the part before ``?`` is the model
that answers. docs/simulator.md lists every scenario and parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

# Scenarios answering an HTTP error before the stream starts (a `models` fallback may follow).
PRE_STREAM = {
    "rate-limit",
    "server-error",
    "timeout",
    "in-flight-budget",
    "moderation",
    "unknown-model",
    "key-error",
}
# Scenarios that stream and then misbehave.
IN_STREAM = {"error-mid", "drop", "cut", "stall", "slow-first"}
# Scenarios that reply normally with a particular text.
REPLIES = {
    "default",
    "echo",
    "reasoning",
    "long",
    "xss",
    "error-body",
    "inspect",
    "tools",
    "vision",  # reads images, not files: the default reply (after what it sees)
}

NAMES = PRE_STREAM | IN_STREAM | REPLIES


@dataclass(frozen=True)
class Scenario:
    name: str  # "default" for every plain model id
    model: str  # the id that answers, without the query string
    params: dict[str, str] = field(default_factory=dict)

    def int(self, key: str, default: int) -> int:
        try:
            return int(self.params[key])
        except (KeyError, ValueError):
            return default

    def float(self, key: str, default: float | None) -> float | None:
        try:
            return float(self.params[key])
        except (KeyError, ValueError):
            return default

    def str(self, key: str, default: str) -> str:
        return self.params.get(key, default)

    def flag(self, key: str, default: bool) -> bool:
        value = self.params.get(key)
        if value is None:
            return default
        return value.lower() not in ("0", "false", "no", "off", "")


def parse(model_id: str) -> Scenario | None:
    """The scenario for a requested model id, or None when the simulator does not know the model."""
    from .catalog import is_known

    base, _, query = model_id.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    if base.startswith("simulator/"):
        name = base.removeprefix("simulator/")
        if name not in NAMES:
            return None
        return Scenario(name=name, model=base, params=params)
    if not is_known(base):
        return None
    return Scenario(name="default", model=base, params=params)
