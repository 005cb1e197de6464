"""The simulator's model list and price table (USD per token, as strings, as in /models)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

# id -> (name, provider name, prompt price, completion price, context length, reasoning)
_MODELS: dict[str, tuple[str, str, str, str, int, bool]] = {
    "openai/gpt-4o-mini": (
        "OpenAI: GPT-4o-mini",
        "OpenAI",
        "0.00000015",
        "0.0000006",
        128_000,
        False,
    ),
    "openai/gpt-4o": ("OpenAI: GPT-4o", "OpenAI", "0.0000025", "0.00001", 128_000, False),
    "anthropic/claude-3.5-sonnet": (
        "Anthropic: Claude 3.5 Sonnet",
        "Anthropic",
        "0.000003",
        "0.000015",
        200_000,
        False,
    ),
    "meta-llama/llama-3.1-8b-instruct": (
        "Meta: Llama 3.1 8B Instruct",
        "DeepInfra",
        "0.00000002",
        "0.00000005",
        131_072,
        False,
    ),
    "mistralai/mistral-7b-instruct:free": (
        "Mistral: Mistral 7B Instruct (free)",
        "Mistral",
        "0",
        "0",
        32_768,
        False,
    ),
    "deepseek/deepseek-r1": ("DeepSeek: R1", "DeepInfra", "0.0000007", "0.0000025", 163_840, True),
    # Scenario models (see docs/simulator.md); parameters after "?" are not part of the id.
    "simulator/echo": ("Simulator: echo", "Simulator", "0.000001", "0.000002", 32_000, False),
    "simulator/reasoning": (
        "Simulator: reasoning",
        "Simulator",
        "0.000001",
        "0.000004",
        32_000,
        True,
    ),
    "simulator/long": ("Simulator: long reply", "Simulator", "0.000001", "0.000002", 32_000, False),
    "simulator/xss": ("Simulator: HTML and script payloads", "Simulator", "0", "0", 32_000, False),
    "simulator/vision": (
        "Simulator: reads images",
        "Simulator",
        "0.000001",
        "0.000002",
        32_000,
        False,
    ),
}

# architecture.input_modalities, as OpenRouter lists them for the real models: some read text
# only, some images too, some images and files (PDFs). Scenario ids not listed read text only,
# but simulator/echo reads everything (tests send it attachments).
_EVERYTHING = ["text", "image", "file"]
_INPUT_MODALITIES: dict[str, list[str]] = {
    "openai/gpt-4o-mini": _EVERYTHING,
    "openai/gpt-4o": _EVERYTHING,
    "anthropic/claude-3.5-sonnet": _EVERYTHING,
    "simulator/echo": _EVERYTHING,
    "simulator/vision": ["text", "image"],
}

SIMULATOR_PRICE = ("0.000001", "0.000002")  # any other simulator/... scenario

# top_provider.max_completion_tokens, as OpenRouter lists them (None: OpenRouter publishes null,
# as it does for many open-weight models).
_MAX_COMPLETION: dict[str, int | None] = {
    "openai/gpt-4o-mini": 16_384,
    "openai/gpt-4o": 16_384,
    "anthropic/claude-3.5-sonnet": 8_192,
    "meta-llama/llama-3.1-8b-instruct": 16_384,
    "mistralai/mistral-7b-instruct:free": None,
    "deepseek/deepseek-r1": 32_768,
    "simulator/echo": 4_096,
    "simulator/reasoning": 8_192,
    "simulator/long": 16_384,
    "simulator/xss": 4_096,
    "simulator/vision": 4_096,
}


def is_known(model: str) -> bool:
    return model in _MODELS or model.startswith("simulator/")


def prices(model: str) -> tuple[Decimal, Decimal]:
    """Prompt and completion price per token."""
    entry = _MODELS.get(model)
    prompt, completion = (entry[2], entry[3]) if entry else SIMULATOR_PRICE
    return Decimal(prompt), Decimal(completion)


def provider(model: str) -> str:
    entry = _MODELS.get(model)
    return entry[1] if entry else "Simulator"


def input_modalities(model: str) -> list[str]:
    return list(_INPUT_MODALITIES.get(model, ["text"]))


def is_reasoning(model: str) -> bool:
    entry = _MODELS.get(model)
    return bool(entry and entry[5])


def model_list(created: int = 1_700_000_000) -> list[dict[str, Any]]:
    """``GET /models`` entries in OpenRouter's shape (prices are strings, USD per token)."""
    out = []
    for model_id, (name, _provider, prompt, completion, context, reasoning) in _MODELS.items():
        params = ["max_tokens", "temperature", "top_p", "stop", "seed"]
        if reasoning:
            params += ["reasoning", "include_reasoning"]
        out.append(
            {
                "id": model_id,
                "canonical_slug": model_id,
                "hugging_face_id": None,
                "name": name,
                "created": created,
                "description": f"{name}, served by the local OpenRouter simulator.",
                "context_length": context,
                "architecture": {
                    "modality": "+".join(input_modalities(model_id)) + "->text",
                    "input_modalities": input_modalities(model_id),
                    "output_modalities": ["text"],
                    "tokenizer": "Other",
                    "instruct_type": None,
                },
                "pricing": {
                    "prompt": prompt,
                    "completion": completion,
                    "request": "0",
                    "image": "0",
                    "web_search": "0",
                    "internal_reasoning": "0",
                },
                "top_provider": {
                    "context_length": context,
                    "max_completion_tokens": _MAX_COMPLETION.get(model_id),
                    "is_moderated": model_id.startswith("openai/"),
                },
                "per_request_limits": None,
                "supported_parameters": params,
                "default_parameters": {},
                "supported_voices": None,
                "links": {"details": f"/api/v1/models/{model_id}/endpoints"},
            }
        )
    return out
