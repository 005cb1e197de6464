"""Mark replies whose worker died as interrupted, and free their limit reservations."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand

from streamchat import limits
from streamchat.streaming.hub import publish_interrupted
from streamchat.streaming.store import finished_frames, reap_interrupted


class Command(BaseCommand):
    help = (
        "Mark streaming replies whose lease lapsed (their worker died) as interrupted, keeping "
        "the text saved so far, and expire their limit reservations. Workers also do this by "
        "themselves."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        replies = reap_interrupted()
        if replies:
            # Pages following them (on any worker) show "interrupted" instead of waiting.
            async_to_sync(publish_interrupted)(finished_frames(replies))
        reservations = limits.reap_expired()
        self.stdout.write(
            f"{len(replies)} replies interrupted, {reservations} reservations expired."
        )
