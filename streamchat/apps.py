from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class StreamchatConfig(AppConfig):
    name = "streamchat"
    verbose_name = _("Chat")
    # Pinned so a host's DEFAULT_AUTO_FIELD never creates migrations in this app.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
