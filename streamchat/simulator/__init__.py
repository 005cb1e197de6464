"""A local OpenRouter: its wire protocol over real HTTP, with scripted faults."""

from .runner import DEFAULT_TEST_KEY, Simulator, run_forever
from .state import SimulatorConfig

__all__ = ["DEFAULT_TEST_KEY", "Simulator", "SimulatorConfig", "run_forever"]
