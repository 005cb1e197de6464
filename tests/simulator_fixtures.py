"""Fixtures for the local OpenRouter simulator (filled in by the protocol issue)."""
