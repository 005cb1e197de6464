"""Re-encrypt every stored API key under the newest encryption key.

Rotation, step by step (docs/admin.md): put a new key FIRST in ENCRYPTION_KEYS, keep the old ones
after it, deploy, run this command, then remove the old keys. Running it again is a no-op: a
secret already under the newest key is left as it is.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from streamchat import crypto
from streamchat.models import ApiKey


class Command(BaseCommand):
    help = "Re-encrypt stored API keys under the first key of STREAMCHAT['ENCRYPTION_KEYS']."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would change; write nothing."
        )

    def handle(self, *args: Any, dry_run: bool = False, **options: Any) -> None:
        try:
            crypto.fernet()
        except crypto.InvalidEncryptionKey as exc:
            raise CommandError(str(exc)) from None
        rotated = current = 0
        unreadable: list[ApiKey] = []
        for key in ApiKey.objects.order_by("pk").only("pk", "label", "hint", "secret_encrypted"):
            token = key.secret_encrypted
            if crypto.is_current(token):
                current += 1
                continue
            try:
                new_token = crypto.rotate(token)
            except crypto.UnreadableSecret:
                unreadable.append(key)
                continue
            if not dry_run:
                # Compare-and-swap: an admin who saved a new secret meanwhile wins.
                ApiKey.objects.filter(pk=key.pk, secret_encrypted=token).update(
                    secret_encrypted=new_token
                )
            rotated += 1
        verb = "would re-encrypt" if dry_run else "re-encrypted"
        self.stdout.write(
            f"{verb} {rotated}, already current {current}, unreadable {len(unreadable)}."
        )
        for key in unreadable:
            self.stderr.write(
                f"  unreadable: #{key.pk} {key.label} ({key.hint}): no configured key opens it; "
                "paste the key again in admin."
            )
