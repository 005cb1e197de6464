"""Assistants: admin presets of a model, system prompt, temperature and tools, picked in the chat
like a model (``assistant:<id>``, or a frame's ``assistant``), and the host's own defined in code.

Replies run over the websocket against the simulator; what reached upstream is read from the
simulator's request log. The tools are tests/tool_fixtures.py's, for users named ``tooler…``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import reverse

import tests.tool_fixtures  # noqa: F401  (registers the test tools in this process)
from streamchat import snapshots
from streamchat.catalog import enabled_assistants
from streamchat.models import Assistant, ChatModel, Tool
from streamchat.tools import assistant, registry

pytestmark = [pytest.mark.django_db(transaction=True)]

ECHO_MODEL = 'simulator/tools?call=t_echo&args={"text":"hi"}'


@pytest.fixture(autouse=True)
def _upstream(simulator_settings: Any) -> Iterator[Any]:
    snapshots.clear_all()
    yield simulator_settings
    snapshots.clear_all()


@pytest.fixture
def tooler(user_factory: Any) -> Any:
    return user_factory(username=f"tooler{id(object())}")


def make_assistant(**fields: Any) -> Assistant:
    registry.sync_rows()
    ChatModel.objects.get_or_create(model_id=ECHO_MODEL, defaults={"enabled": True})
    tools = fields.pop("tools", ())
    fields.setdefault("name", "Echo helper")
    fields.setdefault("model", ECHO_MODEL)
    row = Assistant.objects.create(**fields)
    row.tools.set(Tool.objects.filter(name__in=tools))
    return row


async def run_reply(socket: Any, **frame: Any) -> list[dict[str, Any]]:
    await socket.send({"type": "send", "client_id": "a1", "content": "go", **frame})
    ack = await socket.recv_until("ack")
    seen = []
    while True:
        item = await socket.recv(15)
        if item.get("reply") == ack["reply"]:
            seen.append(item)
            if item["type"] == "reply.finished":
                return seen


async def test_the_assistants_prompt_and_only_its_tools_reach_upstream(
    tooler, chat_socket, simulator
):
    from asgiref.sync import sync_to_async

    preset = await sync_to_async(make_assistant)(
        system_prompt="You are the echo desk.", temperature=0.3, tools=["t_echo", "t_pick"]
    )
    socket = await chat_socket(tooler)
    seen = await run_reply(socket, model=f"assistant:{preset.pk}")
    assert seen[-1]["status"] == "complete"
    assert [f["name"] for f in seen if f["type"] == "tool.call"] == ["t_echo"]
    first = simulator.chat_requests[-2].json
    assert first["model"] == ECHO_MODEL
    assert first["messages"][0] == {"role": "system", "content": "You are the echo desk."}
    assert first["temperature"] == 0.3
    # The user may use every test tool; the assistant offers its own two only.
    assert sorted(t["function"]["name"] for t in first["tools"]) == ["t_echo", "t_pick"]


async def test_the_frames_assistant_field_and_an_assistant_without_tools(
    tooler, chat_socket, simulator
):
    from asgiref.sync import sync_to_async

    preset = await sync_to_async(make_assistant)(system_prompt="No tools here.")
    socket = await chat_socket(tooler)
    seen = await run_reply(socket, assistant=preset.pk)
    assert seen[-1]["status"] == "complete"
    sent = simulator.chat_requests[-1].json
    assert sent["messages"][0]["content"] == "No tools here." and "tools" not in sent
    assert not [f for f in seen if f["type"].startswith("tool.")]


async def test_a_disabled_or_unknown_assistant_is_refused(tooler, chat_socket, simulator):
    from asgiref.sync import sync_to_async

    preset = await sync_to_async(make_assistant)(enabled=False)
    socket = await chat_socket(tooler)
    for frame in ({"model": f"assistant:{preset.pk}"}, {"model": "assistant:x"}):
        await socket.send({"type": "send", "client_id": "z", "content": "go", **frame})
        error = await socket.recv_until("error")
        assert error["code"] == "model_unavailable"
    await socket.send({"type": "send", "client_id": "z", "content": "go", "assistant": "1"})
    error = await socket.recv_until("error")
    assert (error["code"], error["field"]) == ("invalid", "assistant")


def test_the_picker_lists_enabled_assistants(client, user_factory):
    preset = make_assistant()
    make_assistant(name="Hidden", enabled=False)
    client.force_login(user_factory())
    listed = client.get(reverse("streamchat:api-models")).json()["assistants"]
    assert listed == [
        {
            "id": f"assistant:{preset.pk}",
            "assistant": preset.pk,
            "name": "Echo helper",
            "model": ECHO_MODEL,
        }
    ]
    page = client.get(reverse("streamchat:chat")).content.decode()
    assert f'<option value="assistant:{preset.pk}">Echo helper</option>' in page
    assert "Hidden" not in page


def test_admin_adds_and_changes_an_assistant(admin_client):
    registry.sync_rows()
    ChatModel.objects.create(model_id="openai/gpt-4o-mini", enabled=True)
    echo = Tool.objects.get(name="t_echo")
    data = {
        "name": "Support",
        "description": "Answers support questions",
        "enabled": "on",
        "model": "openai/gpt-4o-mini",
        "temperature": "0.5",
        "system_prompt": "Be kind.",
        "tools": [str(echo.pk)],
    }
    page = admin_client.get(reverse("admin:streamchat_assistant_add")).content.decode()
    assert "Be kind" not in page and 'name="system_prompt"' in page
    refused = admin_client.post(
        reverse("admin:streamchat_assistant_add"), {**data, "model": "nope/none"}
    )
    assert refused.status_code == 200 and not Assistant.objects.exists()
    response = admin_client.post(reverse("admin:streamchat_assistant_add"), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    row = Assistant.objects.get(name="Support")
    assert [t.name for t in row.tools.all()] == ["t_echo"] and not row.in_code
    change = reverse("admin:streamchat_assistant_change", args=[row.pk])
    response = admin_client.post(change, {**data, "tools": [], "system_prompt": "Be brief."})
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.system_prompt == "Be brief." and not row.tools.exists()
    listing = admin_client.get(reverse("admin:streamchat_assistant_changelist")).content.decode()
    assert "Support" in listing


def test_an_assistant_defined_in_code_is_synced() -> None:
    assistant(
        "Code helper",
        model=ECHO_MODEL,
        system_prompt="From code.",
        temperature=0.2,
        tools=["t_echo", "not_a_tool"],
    )
    try:
        found = {a["name"]: a for a in enabled_assistants()}
        assert "Code helper" in found
        row = Assistant.objects.get(name="Code helper")
        assert row.in_code and row.system_prompt == "From code."
        assert [t.name for t in row.tools.all()] == ["t_echo"]
        # An admin switches it off; the code's next sync keeps that.
        Assistant.objects.filter(pk=row.pk).update(enabled=False)
        registry.sync_rows()
        assert not Assistant.objects.get(pk=row.pk).enabled
    finally:
        registry.unregister_assistant("Code helper")
        registry.sync_rows()


def test_an_assistant_json_is_what_the_page_config_carries(client, user_factory):
    preset = make_assistant()
    client.force_login(user_factory())
    page = client.get(reverse("streamchat:chat")).content.decode()
    config = page.split('id="streamchat-config" type="application/json">', 1)[1].split("</script>")[
        0
    ]
    assert json.loads(config)["assistants"][0]["id"] == f"assistant:{preset.pk}"
