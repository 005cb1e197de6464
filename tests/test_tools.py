"""Tools: the site's functions called by the model during a chat reply, over live servers.

The simulator plays the model (``simulator/tools?call=NAME&args=JSON&parallel=N&rounds=N``): it
calls the tool, then answers in text quoting the results (docs/simulator.md). The tools below are
in tests/tool_fixtures.py, for users whose name starts with ``tooler`` only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async

from streamchat.models import ChatModel, RateLimit, Tool, ToolCall, Usage
from streamchat.tools import registry
from tests.http_helpers import asession_for, events
from tests.servers import DaphneServer
from tests.tool_fixtures import gate

pytestmark = [pytest.mark.django_db(transaction=True)]


def model(call: str, args: dict[str, Any] | None = None, **knobs: Any) -> str:
    query = f"call={call}"
    if args is not None:
        query += "&args=" + json.dumps(args, separators=(",", ":"))
    for key, value in knobs.items():
        query += f"&{key}={value}"
    return f"simulator/tools?{query}"


@pytest.fixture(scope="module")
def http_server(
    django_db_setup: None, django_db_blocker: Any, _simulator_server: Any
) -> Iterator[DaphneServer]:
    """The live server, with the test tools registered (``tests.toolsite``)."""
    with django_db_blocker.unblock():
        server = DaphneServer(
            simulator=_simulator_server, env={"DJANGO_SETTINGS_MODULE": "tests.tools_settings"}
        )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _upstream(simulator_settings: Any, settings: Any) -> Any:
    settings.STREAMCHAT = {**settings.STREAMCHAT, "CHECKPOINT_MS": 200, "GROUP_BATCH_MS": 50}
    gate.clear()
    yield simulator_settings
    gate.set()


@pytest.fixture
def tooler(user_factory: Any) -> Any:
    return user_factory(username=f"tooler{id(object())}")


async def enable(model_id: str) -> str:
    await ChatModel.objects.acreate(model_id=model_id, enabled=True)
    return model_id


async def send(socket: Any, model_id: str, content: str = "go", client_id: str = "c1") -> int:
    await socket.send(
        {"type": "send", "client_id": client_id, "content": content, "model": model_id}
    )
    ack = await socket.recv_until("ack")
    return ack["reply"]


async def reply_frames(socket: Any, reply_id: int, timeout: float = 15) -> list[dict[str, Any]]:
    """The reply's frames up to its finish (text reassembled by offset: no gap, no repeat)."""
    seen: list[dict[str, Any]] = []
    text = ""
    while True:
        frame = await socket.recv(timeout)
        if frame.get("reply") != reply_id:
            continue
        seen.append(frame)
        if frame["type"] == "delta":
            assert frame["offset"] == len(text)
            text += frame["text"]
        if frame["type"] == "reply.finished":
            return seen


def text_of(seen: list[dict[str, Any]]) -> str:
    return "".join(f["text"] for f in seen if f["type"] == "delta")


def of(seen: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [f for f in seen if f["type"] == kind]


async def finished_runs() -> None:
    from streamchat.streaming.hub import get_hub

    for run in list(get_hub().runs.values()):
        await asyncio.wait_for(run.done.wait(), 20)


# -- round trips ---------------------------------------------------------------------------------


async def test_tool_call_round_trip_over_websocket(tooler, chat_socket, simulator):
    model_id = await enable(model("t_echo", {"text": "hi", "times": 2}))
    socket = await chat_socket(tooler)
    reply_id = await send(socket, model_id)
    seen = await reply_frames(socket, reply_id)
    kinds = [f["type"] for f in seen if f["type"] not in ("delta", "reply.started")]
    assert kinds == ["tool.call", "tool.result", "reply.finished"]
    (call,) = of(seen, "tool.call")
    assert call["name"] == "t_echo" and json.loads(call["arguments"]) == {"text": "hi", "times": 2}
    assert call["step"] == 1 and call["offset"] == 0
    (result,) = of(seen, "tool.result")
    assert result["call"] == call["call"] and result["status"] == "ok"
    assert result["summary"] == "echo:hihi"
    assert text_of(seen) == "The t_echo tool answered: echo:hihi"
    finished = seen[-1]
    assert finished["status"] == "complete" and finished["finish_reason"] == "stop"

    # Upstream: the offered tools (this user's only), then the call and its result sent back.
    first, second = simulator.chat_requests[-2:]
    offered = {t["function"]["name"] for t in first.json["tools"]}
    assert (
        "t_echo" in offered and "t_staff" not in offered and "count_my_conversations" not in offered
    )
    assert second.json["messages"][-2]["tool_calls"][0]["id"] == call["call"]
    assert second.json["messages"][-1] == {
        "role": "tool",
        "tool_call_id": call["call"],
        "content": "echo:hihi",
    }
    await finished_runs()
    row = await ToolCall.objects.aget(message_id=reply_id)
    assert (row.tool_name, row.status, row.result, row.step) == ("t_echo", "ok", "echo:hihi", 1)
    assert row.user_id == tooler.pk and json.loads(row.arguments)["text"] == "hi"
    # One usage row per upstream request; reply.finished sums them.
    rows = [u async for u in Usage.objects.filter(message_id=reply_id).order_by("id")]
    assert len(rows) == 2 and all(u.outcome == "complete" for u in rows)
    assert finished["usage"]["completion_tokens"] == sum(u.completion_tokens for u in rows)
    assert await Tool.objects.filter(name="t_echo", enabled=True).aexists()
    await socket.close()


async def test_tool_call_round_trip_over_sse(tooler, http_server, simulator):
    model_id = await enable(model("t_echo", {"text": "sse"}))
    session = await asession_for(tooler)
    async with httpx.AsyncClient(
        base_url=http_server.url, timeout=20, cookies=session.cookies
    ) as client:
        body = {"type": "send", "client_id": "s1", "content": "go", "model": model_id}
        seen = []
        async with client.stream(
            "POST", "/chat/api/stream/", json=body, headers=session.headers
        ) as response:
            assert response.status_code == 200
            async for event in events(response):
                seen.append(event)
                if event.event == "end":
                    break
    names = [e.event for e in seen if e.event not in ("comment", "delta")]
    assert names[-4:] == ["tool.call", "tool.result", "reply.finished", "end"]
    result = next(e.data for e in seen if e.event == "tool.result")
    assert result["status"] == "ok" and result["summary"] == "echo:sse"
    text = "".join(e.data["text"] for e in seen if e.event == "delta")
    assert text == "The t_echo tool answered: echo:sse"


async def test_parallel_calls_each_run_and_answer(tooler, chat_socket, simulator):
    model_id = await enable(model("t_echo", {"text": "a"}, parallel=2))
    socket = await chat_socket(tooler)
    reply_id = await send(socket, model_id)
    seen = await reply_frames(socket, reply_id)
    calls, results = of(seen, "tool.call"), of(seen, "tool.result")
    assert len(calls) == len(results) == 2
    assert {c["call"] for c in calls} == {r["call"] for r in results}
    # The second call goes to the next tool in turn (the simulator's rule): t_boom, which fails
    # on its own while t_echo answers.
    by_call = {r["call"]: r for r in results}
    assert [(c["name"], by_call[c["call"]]["status"]) for c in calls] == [
        ("t_echo", "ok"),
        ("t_boom", "error"),
    ]
    assert seen[-1]["status"] == "complete"
    tool_messages = [m for m in simulator.chat_requests[-1].json["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 2
    await finished_runs()
    assert await ToolCall.objects.filter(message_id=reply_id).acount() == 2


async def test_the_acting_user_is_injected(tooler, chat_socket, simulator):
    model_id = await enable(model("t_whoami"))
    socket = await chat_socket(tooler)
    reply_id = await send(socket, model_id)
    seen = await reply_frames(socket, reply_id)
    offered = simulator.chat_requests[-2].json["tools"]
    schema = next(t for t in offered if t["function"]["name"] == "t_whoami")["function"]
    assert "user" not in schema["parameters"]["properties"]
    assert of(seen, "tool.result")[0]["summary"] == tooler.username


# -- failures become results the model sees --------------------------------------------------------


async def test_a_tool_that_raises_is_an_error_result_without_its_details(
    tooler, chat_socket, simulator
):
    model_id = await enable(model("t_boom"))
    socket = await chat_socket(tooler)
    reply_id = await send(socket, model_id)
    seen = await reply_frames(socket, reply_id)
    (result,) = of(seen, "tool.result")
    assert result["status"] == "error"
    assert result["summary"] == "Error: the tool failed (ValueError)."
    assert seen[-1]["status"] == "complete"  # the model was told and answered
    assert "secret detail" not in json.dumps(seen) and "Traceback" not in json.dumps(seen)
    assert (
        "the tool failed (ValueError)"
        in simulator.chat_requests[-1].json["messages"][-1]["content"]
    )


async def test_a_tool_error_message_reaches_the_model(tooler, chat_socket, simulator):
    model_id = await enable(model("t_refuse"))
    socket = await chat_socket(tooler)
    seen = await reply_frames(socket, await send(socket, model_id))
    assert of(seen, "tool.result")[0]["summary"] == "Error: no such order"


async def test_a_tool_that_times_out(tooler, chat_socket, simulator):
    model_id = await enable(model("t_slow"))
    socket = await chat_socket(tooler)
    reply_id = await send(socket, model_id)
    seen = await reply_frames(socket, reply_id)
    (result,) = of(seen, "tool.result")
    assert result["status"] == "timeout" and "longer than 0.2 seconds" in result["summary"]
    assert seen[-1]["status"] == "complete"
    await finished_runs()
    assert (await ToolCall.objects.aget(message_id=reply_id)).status == "timeout"


async def test_malformed_or_invalid_arguments_are_error_results(tooler, chat_socket, simulator):
    socket = await chat_socket(tooler)
    malformed = await enable(model("t_echo", {"text": "abcdefgh"}, malformed=1))
    seen = await reply_frames(socket, await send(socket, malformed))
    assert of(seen, "tool.result")[0]["summary"] == "Error: the arguments are not valid JSON."
    invalid = await enable(model("t_pick", {"colour": "green"}))
    seen = await reply_frames(socket, await send(socket, invalid, client_id="c2"))
    (result,) = of(seen, "tool.result")
    assert result["status"] == "error" and "arguments.colour must be one of" in result["summary"]


# -- permissions --------------------------------------------------------------------------------


async def test_permission_denied_tool_is_not_offered_and_a_forced_call_is_refused(
    tooler, user_factory, chat_socket, simulator
):
    model_id = await enable(model("t_staff"))
    socket = await chat_socket(tooler)
    reply_id = await send(socket, model_id)
    seen = await reply_frames(socket, reply_id)
    offered = {t["function"]["name"] for t in simulator.chat_requests[-2].json["tools"]}
    assert "t_staff" not in offered
    (result,) = of(seen, "tool.result")
    assert result["status"] == "denied" and "staff secret" not in json.dumps(seen)
    await finished_runs()
    assert (await ToolCall.objects.aget(message_id=reply_id)).status == "denied"

    # A user no tool is for: nothing offered, the request is as before tools existed.
    plain = await sync_to_async(user_factory)()
    other = await chat_socket(plain)
    seen = await reply_frames(other, await send(other, model_id, client_id="p1"))
    assert "tools" not in simulator.chat_requests[-1].json
    assert not of(seen, "tool.call") and seen[-1]["status"] == "complete"


async def test_a_tool_switched_off_in_admin_is_not_offered(tooler, chat_socket, simulator):
    await sync_to_async(registry.sync_rows)()
    await Tool.objects.filter(name="t_echo").aupdate(enabled=False)
    registry.forget_disabled()
    model_id = await enable(model("t_pick"))
    socket = await chat_socket(tooler)
    await reply_frames(socket, await send(socket, model_id))
    offered = {t["function"]["name"] for t in simulator.chat_requests[-2].json["tools"]}
    assert "t_pick" in offered and "t_echo" not in offered


# -- human in the loop -----------------------------------------------------------------------------


async def _confirm_case(tooler, chat_socket, decide: bool | None) -> list[dict[str, Any]]:
    model_id = await enable(model("t_change", {"item": "order-7"}))
    socket = await chat_socket(tooler)
    reply_id = await send(socket, model_id)
    ask = await socket.recv_until("tool.confirm", timeout=10)
    assert ask["reply"] == reply_id and ask["name"] == "t_change"
    assert json.loads(ask["arguments"]) == {"item": "order-7"}
    if decide is not None:
        await socket.send(
            {"type": "tool.confirm", "reply": reply_id, "call": ask["call"], "approve": decide}
        )
    return await reply_frames(socket, reply_id)


async def test_an_approved_confirmation_runs_the_tool(tooler, chat_socket, simulator):
    seen = await _confirm_case(tooler, chat_socket, True)
    (result,) = of(seen, "tool.result")
    assert result["status"] == "ok" and result["summary"] == "changed:order-7"


async def test_a_declined_confirmation_tells_the_model(tooler, chat_socket, simulator):
    seen = await _confirm_case(tooler, chat_socket, False)
    (result,) = of(seen, "tool.result")
    assert result["status"] == "declined"
    assert "declined" in text_of(seen) and seen[-1]["status"] == "complete"


async def test_a_lapsed_confirmation_declines(tooler, chat_socket, simulator, settings):
    settings.STREAMCHAT = {**settings.STREAMCHAT, "TOOL_CONFIRM_SECONDS": 0.3}
    seen = await _confirm_case(tooler, chat_socket, None)
    assert of(seen, "tool.result")[0]["status"] == "declined"


async def test_a_decision_for_no_waiting_call_is_not_found(tooler, chat_socket, simulator):
    socket = await chat_socket(tooler)
    await socket.send({"type": "tool.confirm", "reply": 999999, "call": "call_x", "approve": True})
    error = await socket.recv_until("error")
    assert error["code"] == "not_found" and error["reply"] == 999999
    await socket.send({"type": "tool.confirm", "reply": 1, "call": "call_x", "approve": "yes"})
    assert (await socket.recv_until("error"))["field"] == "approve"


async def test_confirmation_over_http(tooler, http_server, simulator):
    model_id = await enable(model("t_change", {"item": "x"}))
    session = await asession_for(tooler)
    async with httpx.AsyncClient(
        base_url=http_server.url, timeout=20, cookies=session.cookies
    ) as client:
        body = {"type": "send", "client_id": "h1", "content": "go", "model": model_id}
        seen = []
        async with client.stream(
            "POST", "/chat/api/stream/", json=body, headers=session.headers
        ) as response:
            async for event in events(response):
                seen.append(event)
                if event.event == "tool.confirm":
                    reply, call = event.data["reply"], event.data["call"]
                    url = f"/chat/api/replies/{reply}/tools/{call}/confirm/"
                    answer = await client.post(url, json={"approve": True}, headers=session.headers)
                    assert answer.status_code == 204, answer.text
                if event.event == "end":
                    break
    result = next(e.data for e in seen if e.event == "tool.result")
    assert result["status"] == "ok" and result["summary"] == "changed:x"


# -- bounds, stop, resume, limits ---------------------------------------------------------------


async def test_step_limit_ends_the_reply(tooler, chat_socket, simulator, settings):
    settings.STREAMCHAT = {**settings.STREAMCHAT, "MAX_TOOL_STEPS": 2}
    model_id = await enable(model("t_echo", {"text": "x"}, rounds=5))
    socket = await chat_socket(tooler)
    reply_id = await send(socket, model_id)
    seen = await reply_frames(socket, reply_id)
    # Two upstream requests: the first round of calls ran; the second asked for more.
    assert [c["step"] for c in of(seen, "tool.call")] == [1]
    finished = seen[-1]
    assert finished["status"] == "error" and finished["error"]["code"] == "tool_steps"
    assert len(simulator.chat_requests) == 2
    await finished_runs()
    assert await Usage.objects.filter(message_id=reply_id).acount() == 2


async def test_several_steps_stream_into_one_reply(tooler, chat_socket, simulator):
    model_id = await enable(model("t_echo", {"text": "x"}, rounds=2))
    socket = await chat_socket(tooler)
    reply_id = await send(socket, model_id)
    seen = await reply_frames(socket, reply_id)
    assert [c["step"] for c in of(seen, "tool.call")] == [1, 2]
    assert seen[-1]["status"] == "complete"
    await finished_runs()
    rows = [row async for row in Usage.objects.filter(message_id=reply_id)]
    assert len(rows) == 3
    # The live finish sums the steps; so does the finish rebuilt from the rows (a resume).
    live = seen[-1]["usage"]
    assert live["completion_tokens"] == sum(row.completion_tokens for row in rows)
    await socket.send({"type": "resume", "reply": reply_id, "offset": 0})
    resumed = (await socket.recv_until("reply.finished"))["usage"]
    assert Decimal(resumed.pop("cost")) == Decimal(live.pop("cost"))
    assert resumed == live


async def test_stop_mid_tool(tooler, chat_socket, simulator):
    model_id = await enable(model("t_block"))
    socket = await chat_socket(tooler)
    reply_id = await send(socket, model_id)
    await socket.recv_until("tool.call", timeout=10)
    await socket.send({"type": "stop", "reply": reply_id})
    finished = await socket.recv_until("reply.finished", timeout=10, reply=reply_id)
    assert finished["status"] == "stopped"
    gate.set()
    await finished_runs()
    row = await ToolCall.objects.aget(message_id=reply_id)
    assert (row.status, row.error) == ("error", "stopped")
    assert len(simulator.chat_requests) == 1  # no step after the stop


async def test_resume_mid_tool_shows_the_steps_so_far(tooler, chat_socket, simulator):
    model_id = await enable(model("t_block"))
    first = await chat_socket(tooler)
    reply_id = await send(first, model_id)
    call = await first.recv_until("tool.call", timeout=10)
    await first.close()  # the reply outlives its socket and keeps running its tool
    second = await chat_socket(tooler)
    await second.send({"type": "resume", "reply": reply_id, "offset": 0})
    again = await second.recv_until("tool.call", timeout=10)
    assert again["call"] == call["call"] and again["name"] == "t_block"
    gate.set()
    seen = await reply_frames(second, reply_id)
    assert of(seen, "tool.result")[0]["summary"] == "unblocked"
    assert text_of(seen) == "The t_block tool answered: unblocked"
    assert seen[-1]["status"] == "complete"


async def test_limits_count_each_step(tooler, chat_socket, simulator):
    await RateLimit.objects.acreate(scope="user", user=tooler, requests_per_minute=2)
    model_id = await enable(model("t_echo", {"text": "x"}, rounds=2))  # three steps wanted
    socket = await chat_socket(tooler)
    reply_id = await send(socket, model_id)
    seen = await reply_frames(socket, reply_id)
    assert len(of(seen, "tool.result")) == 2
    finished = seen[-1]
    assert finished["status"] == "error" and finished["error"]["code"] == "rate_limited"
    assert len(simulator.chat_requests) == 2  # the third step never went upstream
    await finished_runs()
    assert await Usage.objects.filter(message_id=reply_id).acount() == 2
    assert await Usage.objects.filter(user=tooler, outcome="refused").acount() == 1
    assert await ToolCall.objects.filter(message_id=reply_id).acount() == 2
