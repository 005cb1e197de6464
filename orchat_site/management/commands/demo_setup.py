"""Create the demo logins if they are missing and print them (used by ``make run``).

With ``--simulator-models`` (``make run`` without an OpenRouter key) it also syncs the models the
local simulator lists and enables the ones seen for the first time, so the chat's picker offers
every one of them by name. Models an admin has seen before are left as the admin set them.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from streamchat.catalog import fetch_and_sync
from streamchat.models import ChatModel
from streamchat.openrouter.errors import OpenRouterError

DEFAULT_MODEL = "openai/gpt-4o-mini"  # the picker's first choice on a fresh demo
DEMO_USERS = [
    # username, password, is_staff
    ("demo", "demo-pass-1234", False),
    ("admin", "admin-pass-1234", True),
]


class Command(BaseCommand):
    help = "Create the demo user and the demo staff user if missing, and print their logins."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--simulator-models",
            action="store_true",
            help="Sync the simulator's models and enable the new ones (make run, offline).",
        )

    def handle(self, *args: Any, simulator_models: bool = False, **options: Any) -> None:
        User = get_user_model()
        for username, password, is_staff in DEMO_USERS:
            user, created = User.objects.get_or_create(
                username=username, defaults={"is_staff": is_staff, "is_superuser": is_staff}
            )
            if created:
                user.set_password(password)
                user.save()
            role = "staff (admin at /admin/)" if is_staff else "chat user"
            state = "created" if created else "exists"
            self.stdout.write(f"  {role:27} login: {username} / {password}   [{state}]")
        if simulator_models:
            self.enable_simulator_models()

    def enable_simulator_models(self) -> None:
        try:
            result = fetch_and_sync()
        except OpenRouterError as error:
            raise CommandError(f"The simulator's /models: {error.message}") from None
        ChatModel.objects.filter(model_id__in=result.created).update(enabled=True)
        if not ChatModel.objects.filter(is_default=True).exists():
            first = ChatModel.objects.filter(enabled=True).order_by("model_id").first()
            preferred = ChatModel.objects.filter(enabled=True, model_id=DEFAULT_MODEL).first()
            if preferred or first:
                ChatModel.objects.filter(pk=(preferred or first).pk).update(is_default=True)
        enabled = ChatModel.objects.filter(enabled=True).count()
        self.stdout.write(
            f"  models: {len(result.created)} new from the simulator enabled; "
            f"{enabled} in the chat's picker"
        )
