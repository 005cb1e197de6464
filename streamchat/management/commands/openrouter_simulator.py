"""``manage.py openrouter_simulator``: a local OpenRouter for the demo and manual testing."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from streamchat.simulator import SimulatorConfig, run_forever


class Command(BaseCommand):
    help = (
        "Serve a local OpenRouter simulator (chat completions, models, key, generation) "
        "on loopback. "
        "Every 'sk-or-v1-...' key is accepted unless --strict-keys; see docs/simulator.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument(
            "--token-delay-ms", type=float, default=30.0, help="Gap between deltas."
        )
        parser.add_argument(
            "--first-token-delay-ms",
            type=float,
            default=300.0,
            help="Delay before the first delta.",
        )
        parser.add_argument(
            "--keepalive-ms",
            type=float,
            default=1000.0,
            help="Interval of ': OPENROUTER PROCESSING' comments.",
        )
        parser.add_argument(
            "--generation-delay-ms",
            type=float,
            default=500.0,
            help="How long /generation answers 404.",
        )
        parser.add_argument("--usage-variant", choices=["A", "B", "C", "none"], default="A")
        parser.add_argument(
            "--key", action="append", default=[], help="A key to accept (repeatable)."
        )
        parser.add_argument(
            "--strict-keys",
            action="store_true",
            help="Accept only the --key keys (others get 401).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = SimulatorConfig(
            token_delay=options["token_delay_ms"] / 1000,
            first_token_delay=options["first_token_delay_ms"] / 1000,
            keepalive_interval=options["keepalive_ms"] / 1000,
            generation_delay=options["generation_delay_ms"] / 1000,
            usage_variant=options["usage_variant"],
            open_keys=not options["strict_keys"],
        )
        run_forever(config, options["host"], options["port"], keys=options["key"])
