"""Fixtures for live servers (Daphne on loopback) and headless Chromium (filled in by the UI issue)."""
