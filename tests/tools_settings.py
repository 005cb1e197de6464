"""The live servers of tests/test_tools.py: the HTTP tests' settings, with the test tools."""

from tests.http_settings import *  # noqa: F401,F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.toolsite"]  # noqa: F405
