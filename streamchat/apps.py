from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


class StreamchatConfig(AppConfig):
    name = "streamchat"
    verbose_name = _("Chat")
    # Pinned so a host's DEFAULT_AUTO_FIELD never creates migrations in this app.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401  (registers the system checks)
            seeding,
            snapshots,
        )

        snapshots.connect_signals()

        # An attachment's file goes with the last row naming it (a conversation's or a user's
        # deletion cascades here, row by row).
        from django.db.models.signals import post_delete

        from .attachments import file_deleted

        post_delete.connect(
            file_deleted, sender="streamchat.Attachment", dispatch_uid="streamchat-attachment-file"
        )

        # The API_KEY setting (OPENROUTER_API_KEY in the demo) becomes an encrypted ApiKey row
        # on the first migrate, when there is none yet.
        post_migrate.connect(seeding.seed_on_migrate, sender=self)

        # A Tool row per registered tool, so admins can list them and switch one off.
        from .tools.registry import sync_rows

        post_migrate.connect(sync_rows, sender=self, dispatch_uid="streamchat-tools")
        from django.db.models.signals import post_save

        from .tools.registry import forget_disabled

        post_save.connect(forget_disabled, sender="streamchat.Tool", dispatch_uid="streamchat-tool")

        # Under Daphne: the engine starts with the server (a restarted worker reaps at once)
        # and drains before it stops (SIGTERM). Other servers use streaming.shutdown.Lifespan.
        from .streaming.shutdown import install_daphne_hooks

        install_daphne_hooks()
