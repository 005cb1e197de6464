from django.apps import AppConfig


class ToolsiteConfig(AppConfig):
    """Registers the tool tests' tools in a live server's process (tests/tools_settings.py)."""

    name = "tests.toolsite"
    label = "toolsite"

    def ready(self) -> None:
        from tests import tool_fixtures  # noqa: F401
