"""What the simulator knows and remembers: keys, generations, scripted replies, recorded requests.

The server runs on its own event loop thread while tests read and script it from theirs, so every
change goes through one lock and waiting for a disconnect uses a condition variable.
"""

from __future__ import annotations

import secrets
import string
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

OPEN_KEY_PREFIX = "sk-or-v1-"


@dataclass
class SimulatorConfig:
    """Live knobs; change them on a running simulator (``sim.config.token_delay = 0.01``)."""

    token_delay: float = 0.02  # seconds between two deltas
    first_token_delay: float = 0.0  # seconds before the first delta (keep-alive comments meanwhile)
    keepalive_interval: float = 1.0  # seconds between ": OPENROUTER PROCESSING" comments
    generation_delay: float = 0.0  # seconds /generation answers 404 after a generation ended
    usage_variant: str = "A"  # A, B or C (docs/simulator.md), or "none"
    # Accept every "sk-or-v1-..." key not configured otherwise (standalone mode). Keys containing
    # "-invalid" are then refused (401) and keys containing "-broke" are out of credits (402).
    open_keys: bool = False


@dataclass
class SimKey:
    secret: str
    limit: Decimal | None = None  # credits this key may spend (USD); None: unlimited
    usage: Decimal = Decimal(0)
    revoked: bool = False

    @property
    def label(self) -> str:
        return f"{self.secret[:11]}...{self.secret[-3:]}"

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.usage >= self.limit


@dataclass
class Generation:
    id: str
    model: str
    provider: str
    key: str
    streamed: bool
    created: float = field(default_factory=time.time)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal = Decimal(0)
    finish_reason: str | None = None
    cancelled: bool = False
    ended_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        latency = int(((self.ended_at or time.time()) - self.created) * 1000)
        return {
            "id": self.id,
            "upstream_id": f"chatcmpl-{self.id[-12:]}",
            "total_cost": float(self.cost),
            "usage": float(self.cost),
            "cache_discount": None,
            "upstream_inference_cost": float(self.cost),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
            "model": self.model,
            "provider_name": self.provider,
            "streamed": self.streamed,
            "cancelled": self.cancelled,
            "finish_reason": self.finish_reason,
            "native_finish_reason": self.finish_reason,
            "latency": latency,
            "generation_time": latency,
            "moderation_latency": None,
            "tokens_prompt": self.prompt_tokens,
            "tokens_completion": self.completion_tokens,
            "native_tokens_prompt": self.prompt_tokens,
            "native_tokens_completion": self.completion_tokens,
            "native_tokens_reasoning": self.reasoning_tokens,
            "native_tokens_cached": 0,
            "num_media_prompt": None,
            "num_media_completion": None,
            "num_search_results": None,
            "is_byok": False,
            "api_type": "completions",
            "origin": "",
        }


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]  # case-insensitive
    json: Any

    @property
    def model(self) -> str | None:
        return self.json.get("model") if isinstance(self.json, dict) else None


@dataclass(frozen=True)
class Disconnect:
    """A client went away while its stream was still being written."""

    generation_id: str
    model: str
    tokens_sent: int
    at: float


@dataclass(frozen=True)
class ScriptedReply:
    text: str
    reasoning: str | None = None
    # The content deltas exactly as given (``text`` is then ignored): a str is JSON-escaped as
    # usual (a lone surrogate goes out as its escape, e.g. ``\ud83d``), bytes go into the JSON
    # string verbatim, so they may be bytes that are not UTF-8.
    pieces: tuple[str | bytes, ...] | None = None
    # Write each chunk in two parts, cut after the first byte of its first multi-byte character,
    # with a pause between them: the client reads the character in two network reads.
    split_characters: bool = False


def new_generation_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return f"gen-{int(time.time())}-" + "".join(secrets.choice(alphabet) for _ in range(20))


class SimulatorState:
    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.keys: dict[str, SimKey] = {}
        self.generations: dict[str, Generation] = {}
        self.requests: list[RecordedRequest] = []
        self.disconnects: list[Disconnect] = []
        self.replies: deque[ScriptedReply] = deque()
        self.attempts: Counter[str] = Counter()

    # --- keys ------------------------------------------------------------------------------
    def add_key(self, secret: str, credits: Decimal | float | str | None = None) -> SimKey:
        with self.lock:
            limit = None if credits is None else Decimal(str(credits))
            key = self.keys[secret] = SimKey(secret=secret, limit=limit)
            return key

    def lookup_key(self, secret: str) -> SimKey | None:
        with self.lock:
            key = self.keys.get(secret)
            if key is None and self.config.open_keys and secret.startswith(OPEN_KEY_PREFIX):
                if "-invalid" in secret:
                    return None
                limit = Decimal(0) if "-broke" in secret else None
                key = self.keys[secret] = SimKey(secret=secret, limit=limit)
            return key

    def charge(self, key: SimKey, cost: Decimal) -> None:
        with self.lock:
            key.usage += cost

    # --- requests and scripted replies -----------------------------------------------------
    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def bump(self, model_id: str) -> int:
        """Count one attempt at a scenario id (``times=N`` scenarios fail the first N)."""
        with self.lock:
            self.attempts[model_id] += 1
            return self.attempts[model_id]

    def take_reply(self) -> ScriptedReply | None:
        with self.lock:
            return self.replies.popleft() if self.replies else None

    # --- generations -----------------------------------------------------------------------
    def add_generation(self, generation: Generation) -> None:
        with self.lock:
            self.generations[generation.id] = generation

    def end_generation(self, generation: Generation, *, cancelled: bool = False) -> None:
        with self.changed:
            generation.cancelled = cancelled
            generation.ended_at = time.time()
            self.changed.notify_all()

    def client_gone(self, generation: Generation, tokens_sent: int) -> None:
        with self.changed:
            self.disconnects.append(
                Disconnect(generation.id, generation.model, tokens_sent, time.monotonic())
            )
            self.changed.notify_all()

    def visible_generation(self, generation_id: str) -> Generation | None:
        """The generation once ended and ``generation_delay`` passed (404 before, as OpenRouter)."""
        with self.lock:
            generation = self.generations.get(generation_id)
            if generation is None or generation.ended_at is None:
                return None
            if time.time() < generation.ended_at + self.config.generation_delay:
                return None
            return generation

    def reset(self) -> None:
        with self.lock:
            self.keys.clear()
            self.generations.clear()
            self.requests.clear()
            self.disconnects.clear()
            self.replies.clear()
            self.attempts.clear()
