"""The model catalogue: the models users may pick (``enabled_models``), and keeping ChatModel rows
in step with OpenRouter's ``/models`` list ("Sync from OpenRouter").

What sync writes, and what it leaves alone:

- It fills facts: prices (OpenRouter gives strings in USD per *token*; ChatModel stores USD per
  *million* tokens), context length, the longest reply the top provider allows
  (``top_provider.max_completion_tokens``, which caps what a budget reserves for a reply), what
  the model reads (``architecture.input_modalities``: attachments go only to models that list
  their kind), and the display name while that is still blank.
- It never touches admin choices: enabled, default, display name once set, temperature, max tokens,
  system prompt, fallback models.
- Models it has not seen before arrive disabled: nothing becomes usable by chat until an admin
  enables it.

Sync is used by the ``sync_openrouter_models`` command and the admin's "Sync from OpenRouter"
button; ``enabled_models`` by the chat page, the session JSON API and the OpenAI-compatible API.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from django.utils import timezone

from .conf import app_settings
from .models import ChatModel

MILLION = Decimal(1_000_000)
# ChatModel's price fields: 12 digits, 6 after the point.
PRICE_STEP = Decimal("0.000001")
PRICE_MAX = Decimal("999999.999999")
SYNCED_FIELDS = (
    "display_name",
    "prompt_price",
    "completion_price",
    "context_length",
    "max_completion_tokens",
    "input_modalities",
)


def enabled_models() -> list[dict[str, Any]]:
    """The models a user may pick, default first; ``DEFAULT_MODEL`` alone when none is enabled."""
    rows = list(ChatModel.objects.filter(enabled=True))
    if not rows:
        model_id = app_settings.DEFAULT_MODEL
        return [{"id": model_id, "name": model_id, "default": True}]
    default = next((row for row in rows if row.is_default), rows[0])
    return [{"id": row.model_id, "name": str(row), "default": row.pk == default.pk} for row in rows]


def enabled_assistants() -> list[dict[str, Any]]:
    """The assistants a user may pick (admin presets, docs/admin.md "Assistants"), by name; the
    picker sends ``id`` (``assistant:<pk>``) as the model."""
    from . import snapshots

    return [
        {
            "id": f"assistant:{item.id}",
            "assistant": item.id,
            "name": item.name,
            "model": item.model_id,
        }
        for item in sorted(snapshots.enabled_assistants.get().values(), key=lambda a: a.name)
    ]


@dataclass
class SyncResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    # Enabled models that OpenRouter no longer lists (left as they are; an admin decides).
    missing: list[str] = field(default_factory=list)
    skipped: int = 0  # entries without an id

    def summary(self) -> str:
        text = (
            f"{len(self.created)} new (disabled), {len(self.updated)} updated, "
            f"{self.unchanged} unchanged"
        )
        if self.missing:
            text += f"; enabled but no longer listed by OpenRouter: {', '.join(self.missing)}"
        return text


def per_million(price: Any) -> Decimal | None:
    """OpenRouter's per-token price string as USD per million tokens; None when unknown.

    OpenRouter marks variable prices (e.g. its auto router) with "-1"; those are unknown too.
    """
    if price is None or price == "":
        return None
    try:
        value = Decimal(str(price)) * MILLION
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite() or value < 0 or value > PRICE_MAX:
        return None
    return value.quantize(PRICE_STEP)


def _facts(entry: dict[str, Any]) -> dict[str, Any]:
    pricing = entry.get("pricing") or {}
    top_provider = entry.get("top_provider") or {}
    if not isinstance(top_provider, dict):
        top_provider = {}
    context = entry.get("context_length") or top_provider.get("context_length")
    return {
        "display_name": str(entry.get("name") or "")[:200],
        "prompt_price": per_million(pricing.get("prompt")),
        "completion_price": per_million(pricing.get("completion")),
        "context_length": _count(context),
        "max_completion_tokens": _count(top_provider.get("max_completion_tokens")),
        "input_modalities": _modalities(entry.get("architecture")),
    }


def _modalities(architecture: Any) -> list[str]:
    """``architecture.input_modalities`` (``["text", "image", "file"]``…): what attachments the
    model reads; junk reads as nothing listed."""
    listed = architecture.get("input_modalities") if isinstance(architecture, dict) else None
    if not isinstance(listed, list):
        return []
    return sorted({m for m in listed if isinstance(m, str) and 0 < len(m) <= 32})


def _count(value: Any) -> int | None:
    """A positive whole number from /models (null, 0 or junk: unknown)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not (0 < value < math.inf):
        return None
    return min(int(value), 2_147_483_647)  # PositiveIntegerField's range on every database


def sync_models(
    entries: Iterable[dict[str, Any]], *, only: Collection[str] | None = None
) -> SyncResult:
    """Apply OpenRouter's ``/models`` entries to ChatModel rows.

    ``only``: model ids to refresh; other entries are ignored and no model is created.
    """
    result = SyncResult()
    now = timezone.now()
    listed: set[str] = set()
    with transaction.atomic():
        existing = {m.model_id: m for m in ChatModel.objects.select_for_update()}
        to_create, to_update = [], []
        for entry in entries:
            model_id = str(entry.get("id") or "").strip()
            if not model_id or len(model_id) > 200:
                result.skipped += 1
                continue
            listed.add(model_id)
            if only is not None and model_id not in only:
                continue
            facts = _facts(entry)
            row = existing.get(model_id)
            if row is None:
                if only is not None:
                    continue
                to_create.append(
                    ChatModel(model_id=model_id, enabled=False, last_synced=now, **facts)
                )
                result.created.append(model_id)
                continue
            if row.display_name:  # an admin's (or an earlier sync's) name stays
                facts.pop("display_name")
            changed = [name for name, value in facts.items() if getattr(row, name) != value]
            for name in changed:
                setattr(row, name, facts[name])
            row.last_synced = now
            if changed:
                row.updated = now
                result.updated.append(model_id)
            else:
                result.unchanged += 1
            to_update.append(row)
        ChatModel.objects.bulk_create(to_create, batch_size=500)
        ChatModel.objects.bulk_update(
            to_update, [*SYNCED_FIELDS, "last_synced", "updated"], batch_size=500
        )
    result.missing = sorted(
        model_id
        for model_id, row in existing.items()
        if row.enabled and model_id not in listed and (only is None or model_id in only)
    )
    return result


def fetch_and_sync(*, only: Collection[str] | None = None) -> SyncResult:
    """Read ``/models`` from OpenRouter (``BASE_URL``) and apply it; raises ``OpenRouterError``."""
    from .keys import usable_keys
    from .openrouter.account import list_models
    from .upstream import probe

    # /models needs no key, but sending one (when there is one) gets the account's own view.
    keys = usable_keys()
    result = sync_models(list_models(keys[0].secret if keys else None), only=only)
    probe()  # the upstream just answered: learn again whether it is the simulator (banner)
    return result
