"""Fill ChatModel rows from OpenRouter's /models: names, prices, context lengths.

Admin choices (enabled, default, display names once set, per-model settings) are left alone, and
models seen for the first time arrive disabled (streamchat.catalog).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from streamchat.catalog import fetch_and_sync
from streamchat.openrouter.errors import OpenRouterError


class Command(BaseCommand):
    help = "Sync chat models (names, prices, context lengths) from OpenRouter's /models."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "models",
            nargs="*",
            metavar="MODEL_ID",
            help="Refresh only these existing models (default: the whole list; new models "
            "arrive disabled).",
        )

    def handle(self, *args: Any, models: list[str], **options: Any) -> None:
        try:
            result = fetch_and_sync(only=set(models) or None)
        except OpenRouterError as exc:
            raise CommandError(f"OpenRouter: {exc.message}") from None
        self.stdout.write(f"Synced from OpenRouter: {result.summary()}.")
