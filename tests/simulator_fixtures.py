"""Fixtures for the local OpenRouter simulator (docs/simulator.md).

``simulator``: one server per test session (started on first use, on a free loopback port, in a
thread with its own event loop), reset before every test: keys, records and scripts forgotten,
test-speed knobs restored. ``simulator_settings``: points STREAMCHAT's BASE_URL and API_KEY at it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from streamchat.simulator import Simulator, SimulatorConfig


def fast_config() -> SimulatorConfig:
    """Fast knobs for tests: a few ms per token, frequent keep-alives, no /generation lag."""
    return SimulatorConfig(
        token_delay=0.002,
        first_token_delay=0.0,
        keepalive_interval=0.05,
        generation_delay=0.0,
        usage_variant="A",
        open_keys=False,
    )


@pytest.fixture(scope="session")
def _simulator_server() -> Iterator[Simulator]:
    sim = Simulator(fast_config()).start()
    yield sim
    sim.stop()


@pytest.fixture
def simulator(_simulator_server: Simulator) -> Simulator:
    """A running simulator, reset for this test: ``.base_url``, ``.api_key``, ``.next_reply()``."""
    _simulator_server.reset(fast_config())
    return _simulator_server


@pytest.fixture
def simulator_settings(settings: Any, simulator: Simulator) -> Simulator:
    """Django settings pointing streamchat at the simulator (other STREAMCHAT keys kept)."""
    settings.STREAMCHAT = {
        **getattr(settings, "STREAMCHAT", {}),
        "BASE_URL": simulator.base_url,
        "API_KEY": simulator.api_key,
    }
    return simulator
