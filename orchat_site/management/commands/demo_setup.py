"""Create the demo logins if they are missing and print them (used by ``make run``)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

DEMO_USERS = [
    # username, password, is_staff
    ("demo", "demo-pass-1234", False),
    ("admin", "admin-pass-1234", True),
]


class Command(BaseCommand):
    help = "Create the demo user and the demo staff user if missing, and print their logins."

    def handle(self, *args: Any, **options: Any) -> None:
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
