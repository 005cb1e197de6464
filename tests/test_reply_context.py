"""What a reply sends upstream: system prompt, the branch it answers, trimmed to the context
length."""

from __future__ import annotations

import pytest

from streamchat.models import Message
from streamchat.streaming.context import build_messages
from streamchat.streaming.store import ModelChoice
from streamchat.text import clean_text


def turn(role: str, content: str, status: str = "complete") -> Message:
    return Message(role=role, content=content, status=status)


def test_system_prompt_then_the_branch_in_order():
    branch = [turn("user", "a"), turn("assistant", "b"), turn("user", "c")]
    messages = build_messages(branch, ModelChoice("x/y", system_prompt="Be kind."), None)
    assert messages == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]


def test_failed_and_empty_replies_add_nothing_but_partial_text_is_kept():
    branch = [
        turn("user", "a"),
        turn("assistant", "", status="error"),
        turn("assistant", "half", status="stopped"),
        turn("user", "c"),
    ]
    assert [m["content"] for m in build_messages(branch, ModelChoice("x/y"), None)] == [
        "a",
        "half",
        "c",
    ]


def test_oldest_turns_are_dropped_to_fit_the_context_length():
    branch = [turn("user", "x" * 400), turn("assistant", "y" * 400), turn("user", "z" * 40)]
    model = ModelChoice("x/y", system_prompt="S", context_length=150)
    messages = build_messages(branch, model, max_tokens=20)
    assert messages[0] == {"role": "system", "content": "S"}
    assert [m["content"][0] for m in messages[1:]] == ["y", "z"]
    # The question itself always goes, even when it alone is too long.
    messages = build_messages([turn("user", "q" * 10_000)], model, max_tokens=20)
    assert messages[-1]["content"].startswith("q")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain", "plain"),
        ("nul\x00here", "nulhere"),
        ("lone \ud800 surrogate", "lone  surrogate"),
        ("emoji 😀", "emoji 😀"),
    ],
)
def test_text_rule_removes_nul_and_lone_surrogates_only(raw, clean):
    assert clean_text(raw) == clean
