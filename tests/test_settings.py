"""The settings object: documented defaults, the host's overrides, and the README table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import override_settings

from streamchat.conf import DEFAULTS, app_settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults_apply_when_the_host_sets_nothing():
    with override_settings(STREAMCHAT={}):
        assert app_settings.BASE_URL == "https://openrouter.ai/api/v1"
        assert app_settings.MAX_FRAME_BYTES == DEFAULTS["MAX_FRAME_BYTES"]


def test_host_overrides_win_and_are_seen_at_once():
    with override_settings(STREAMCHAT={"IDLE_TIMEOUT": 3.5}):
        assert app_settings.IDLE_TIMEOUT == 3.5
    assert app_settings.IDLE_TIMEOUT == DEFAULTS["IDLE_TIMEOUT"]


def test_unknown_setting_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="Unknown streamchat setting"):
        app_settings.NO_SUCH_THING  # noqa: B018


def test_as_dict_has_every_key():
    assert set(app_settings.as_dict()) == set(DEFAULTS)


@pytest.mark.once
def test_readme_settings_table_matches_the_defaults():
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| [^|]+ \| `([^`]*)` \|", README.read_text(), re.M))
    for name, default in DEFAULTS.items():
        assert name in rows, f"README.md's settings table lacks {name}"
        assert rows[name] == repr(default), f"README.md shows {rows[name]} for {name}"


@pytest.mark.once
def test_readme_daphne_options_exist_with_the_defaults_it_names():
    """The Daphne rows of README's "Slow clients and server timeouts" table name real options,
    and where a row says "its default" the value is Daphne's default."""
    from daphne.cli import CommandLineInterface

    actions = CommandLineInterface().parser._option_string_actions
    section = README.read_text().split("### Slow clients and server timeouts", 1)[1]
    rows = re.findall(r"^\| Daphne \| ([^|]+) \| ([^|]+) \|", section, re.M)
    assert len(rows) >= 3, rows
    for options, recommended in rows:
        names = re.findall(r"`(--[a-z_-]+)`", options)
        values = re.findall(r"`([^`]+)`", recommended)
        assert names, options
        for name in names:
            assert name in actions, f"daphne has no option {name}"
        if "its default" in recommended:
            defaults = [actions[name].default for name in names]
            if recommended.strip().startswith("unset"):
                shown: list[int | None] = [None] * len(names)
            else:
                shown = [int(value) for value in values[: len(names)]]
            assert defaults == shown, (names, defaults, recommended)
