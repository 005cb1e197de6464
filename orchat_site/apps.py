from django.apps import AppConfig


class DemoSiteConfig(AppConfig):
    """The demo project as an app, so it can carry its own management commands."""

    name = "orchat_site"
    verbose_name = "streamchat demo site"

    def ready(self) -> None:
        from . import tools  # noqa: F401  (registers the demo's tools)
