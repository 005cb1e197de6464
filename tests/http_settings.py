"""Settings of the live servers in the HTTP tests (tests/test_sse*.py, test_http_*.py,
test_openai_api*.py): the test settings with a short SSE keep-alive, so a test sees keep-alive
comments while a reply waits for its first token without waiting 15 s."""

from tests.settings import *  # noqa: F401,F403

STREAMCHAT = {**STREAMCHAT, "SSE_KEEPALIVE_SECONDS": 0.2}  # noqa: F405
