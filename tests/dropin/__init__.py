"""Helpers of tests/test_dropin.py: README's "Add to your site", applied to a new project."""
