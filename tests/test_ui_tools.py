"""The chat page's tool steps in headless Chromium, against Daphne with the test tools
(tests/tool_fixtures.py, for users named ``tooler…``) and the simulator playing the model: a step
shows collapsed with its tool and status, opens to its arguments and result, the final text
follows; a tool that asks first shows Approve / Decline; the steps come back after a reload.

Screenshots at 1280×800 and 390×844 go to test-artifacts/.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamchat.models import ChatModel, ToolCall

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TOOLS_SERVER = [{"DJANGO_SETTINGS_MODULE": "tests.tools_settings"}]
REPLY = ".sc-msg--assistant"
STEP = f"{REPLY} .sc-tool"


def tool_model(call: str, args: dict[str, Any]) -> str:
    model_id = f"simulator/tools?call={call}&args={json.dumps(args, separators=(',', ':'))}"
    ChatModel.objects.create(model_id=model_id, enabled=True, is_default=True)
    return model_id


@pytest.fixture
def tooler(user_factory: Any) -> Any:
    return user_factory(username=f"tooler{id(object())}", is_staff=True)


def send(page: Any, text: str) -> None:
    page.fill("#sc-input", text)
    page.press("#sc-input", "Enter")


def finished(page: Any) -> Any:
    reply = page.locator(REPLY).last
    reply.and_(page.locator('[data-status="complete"]')).wait_for(timeout=15_000)
    return reply


@pytest.mark.parametrize("live_daphne", TOOLS_SERVER, indirect=True)
def test_a_tool_step_shows_collapsed_opens_and_survives_a_reload(
    page: Any, login: Any, tooler: Any, screenshot: Any
) -> None:
    tool_model("t_echo", {"text": "hi", "times": 2})
    page.set_viewport_size({"width": 1280, "height": 800})
    login(page, tooler)
    send(page, "echo please")
    reply = finished(page)
    step = reply.locator(".sc-tool")
    assert step.count() == 1
    summary = step.locator("summary")
    assert "t_echo" in summary.inner_text()
    assert step.get_attribute("data-status") == "ok"
    assert "done" in summary.inner_text()
    assert not step.locator(".sc-tool-arguments").is_visible()  # collapsed
    # The final text follows the step, quoting the tool's result.
    assert "echo:hihi" in reply.locator(".sc-body").inner_text()
    after = step.evaluate("el => { var n = el.nextElementSibling; return n ? n.textContent : ''; }")
    assert "echo:hihi" in after
    screenshot(page, "collapsed-1280")
    summary.focus()
    page.keyboard.press("Enter")  # the keyboard opens it
    arguments = step.locator(".sc-tool-arguments")
    arguments.wait_for()
    assert json.loads(arguments.inner_text()) == {"text": "hi", "times": 2}
    assert "echo:hihi" in step.locator(".sc-tool-result").inner_text()
    screenshot(page, "open-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "open-390")

    page.reload()
    reply = finished(page)
    step = reply.locator(".sc-tool")
    step.wait_for()
    assert "t_echo" in step.locator("summary").inner_text()
    assert step.get_attribute("data-status") == "ok"
    step.locator("summary").click()
    assert json.loads(step.locator(".sc-tool-arguments").inner_text()) == {"text": "hi", "times": 2}
    assert "echo:hihi" in step.locator(".sc-tool-result").inner_text()
    screenshot(page, "reloaded-390")


@pytest.mark.parametrize("live_daphne", TOOLS_SERVER, indirect=True)
def test_a_confirm_tool_asks_and_approving_continues(
    page: Any, login: Any, tooler: Any, screenshot: Any
) -> None:
    tool_model("t_change", {"item": "lamp"})
    page.set_viewport_size({"width": 390, "height": 844})
    login(page, tooler)
    send(page, "change the lamp")
    prompt = page.locator(f"{STEP} .sc-tool-confirm")
    prompt.wait_for(timeout=15_000)
    assert "t_change" in prompt.inner_text()
    assert "s left" in prompt.locator(".sc-tool-left").inner_text()
    approve = prompt.locator('[data-tool="approve"]')
    assert prompt.locator('[data-tool="decline"]').is_enabled()
    screenshot(page, "confirm-390")
    page.set_viewport_size({"width": 1280, "height": 800})
    screenshot(page, "confirm-1280")
    # A reload while the tool waits: resume shows the step and its prompt again.
    page.reload()
    prompt = page.locator(f"{STEP} .sc-tool-confirm")
    prompt.wait_for(timeout=15_000)
    approve = prompt.locator('[data-tool="approve"]')
    assert "t_change" in page.locator(f"{STEP} summary").inner_text()
    approve.focus()
    page.keyboard.press("Enter")  # keyboard reachable
    reply = finished(page)
    assert prompt.is_hidden()
    step = reply.locator(".sc-tool")
    assert step.get_attribute("data-status") == "ok"
    assert "changed:lamp" in reply.locator(".sc-body").inner_text()
    assert ToolCall.objects.get(tool_name="t_change").status == ToolCall.Status.OK


@pytest.mark.parametrize("live_daphne", TOOLS_SERVER, indirect=True)
def test_declining_tells_the_model_and_marks_the_step(page: Any, login: Any, tooler: Any) -> None:
    tool_model("t_change", {"item": "door"})
    login(page, tooler)
    send(page, "change the door")
    prompt = page.locator(f"{STEP} .sc-tool-confirm")
    prompt.wait_for(timeout=15_000)
    prompt.locator('[data-tool="decline"]').click()
    reply = finished(page)
    step = reply.locator(".sc-tool")
    assert step.get_attribute("data-status") == "declined"
    assert "declined" in step.locator("summary").inner_text()
    assert ToolCall.objects.get(tool_name="t_change").status == ToolCall.Status.DECLINED
