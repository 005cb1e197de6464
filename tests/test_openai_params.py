"""Issue 17: the OpenAI-compatible endpoint passes every OpenRouter chat parameter through, relays
tool calls, and refuses what it cannot honour. The real ``openai`` SDK (sync and async) and
``curl`` against a live Daphne serving the demo, the simulator upstream (no mocks); what reached
upstream is read from the simulator's record of each request."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx
import openai
import pytest
from asgiref.sync import sync_to_async

from streamchat.models import ChatModel, Conversation, Message, Usage
from streamchat.simulator.replies import DEFAULT_REPLY
from tests.http_helpers import personal_token

pytestmark = [pytest.mark.django_db(transaction=True)]

QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
MODEL = "openai/gpt-4o-mini"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
}


@pytest.fixture
def base_url(http_server: Any) -> str:
    return f"{http_server.url}/chat/v1"


@pytest.fixture
def token(user: Any) -> str:
    ChatModel.objects.create(model_id=MODEL, enabled=True, is_default=True)
    return personal_token(user)


@pytest.fixture
def sdk(base_url: str, token: str) -> Any:
    client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0)
    yield client
    client.close()


@pytest.fixture
async def asdk(base_url: str, user: Any) -> Any:
    """The async SDK, closed on this test's own loop."""
    await ChatModel.objects.acreate(model_id=MODEL, enabled=True, is_default=True)
    client = openai.AsyncOpenAI(
        base_url=base_url, api_key=await sync_to_async(personal_token)(user), max_retries=0
    )
    yield client
    await client.close()


def sent(simulator: Any) -> dict[str, Any]:
    """The body of the last chat request upstream got."""
    return simulator.chat_requests[-1].json


def assembled(chunks: list[Any]) -> dict[int, dict[str, str]]:
    """Streamed ``delta.tool_calls`` joined by index, as a client does."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] = call.id or entry["id"]
            if call.function is not None:
                entry["name"] = call.function.name or entry["name"]
                entry["arguments"] += call.function.arguments or ""
    return calls


# -- passthrough -------------------------------------------------------------------------------

PASSED = {
    "top_p": 0.9,
    "top_k": 40,
    "seed": 1234,
    "stop": ["\n\nZZZ", "never"],
    "frequency_penalty": 0.5,
    "presence_penalty": -0.25,
    "repetition_penalty": 1.1,
    "min_p": 0.05,
    "top_a": 0.2,
    "logit_bias": {"50256": -100, "1234": 2.5},
    "response_format": {"type": "text"},
    "provider": {
        "order": ["openai", "azure"],
        "allow_fallbacks": False,
        "require_parameters": True,
        "data_collection": "deny",
        "sort": "price",
        "max_price": {"prompt": 1, "completion": "2"},
    },
    "reasoning": {"effort": "low", "exclude": True},
    "usage": {"include": True},
    "user": "customer-42",
    "transforms": ["middle-out"],
}


def test_every_passthrough_parameter_reaches_upstream_unchanged(sdk, simulator, user):
    ChatModel.objects.create(model_id="anthropic/claude-3.5-sonnet", enabled=True)
    first, extra = {}, {}
    for name, value in PASSED.items():
        # The SDK's own arguments where it has them; OpenRouter's own through extra_body.
        (
            first
            if name
            not in (
                "top_k",
                "repetition_penalty",
                "min_p",
                "top_a",
                "provider",
                "reasoning",
                "usage",
                "transforms",
            )
            else extra
        )[name] = value
    completion = sdk.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_completion_tokens=500,
        temperature=0.3,
        extra_body={**extra, "models": ["anthropic/claude-3.5-sonnet"]},
        **first,
    )
    body = sent(simulator)
    for name, value in PASSED.items():
        assert body[name] == value, name
    assert body["models"] == ["anthropic/claude-3.5-sonnet"]
    assert body["max_tokens"] == 500 and body["temperature"] == 0.3
    assert body["model"] == MODEL and body["messages"] == QUESTION and body["stream"] is True
    assert "stream_options" not in body and "max_completion_tokens" not in body
    assert completion.choices[0].finish_reason == "stop"
    (usage,) = Usage.objects.all()
    assert (usage.source, usage.outcome, usage.user) == ("api", "complete", user)


def test_nulls_are_not_sent_and_the_admins_fallbacks_are_replaced_by_the_clients(
    sdk, simulator, base_url
):
    ChatModel.objects.filter(model_id=MODEL).update(fallback_models=["openai/gpt-4o"])
    ChatModel.objects.create(model_id="openai/gpt-4o", enabled=True)
    ChatModel.objects.create(model_id="simulator/server-error?status=503", enabled=True)
    response = httpx.post(
        f"{base_url}/chat/completions",
        json={"model": MODEL, "messages": QUESTION, "stop": None, "tools": None, "seed": None},
        headers={"Authorization": f"Bearer {sdk.api_key}"},
    )
    assert response.status_code == 200, response.text
    assert not {"stop", "tools", "seed"} & set(sent(simulator))
    assert sent(simulator)["models"] == ["openai/gpt-4o"]  # the admin's list
    # The client's list replaces it; the model that answered is the one reported.
    completion = sdk.chat.completions.create(
        model="simulator/server-error?status=503",
        messages=QUESTION,
        extra_body={"models": ["openai/gpt-4o"]},
    )
    assert sent(simulator)["models"] == ["openai/gpt-4o"]
    assert completion.model == "openai/gpt-4o"


# -- JSON mode, seed, stop ---------------------------------------------------------------------


def test_json_mode_json_object_streamed_and_not(sdk, simulator):
    fmt = {"type": "json_object"}
    completion = sdk.chat.completions.create(model=MODEL, messages=QUESTION, response_format=fmt)
    assert json.loads(completion.choices[0].message.content) == {"answer": DEFAULT_REPLY}
    assert sent(simulator)["response_format"] == fmt
    chunks = list(
        sdk.chat.completions.create(
            model=MODEL, messages=QUESTION, response_format=fmt, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"answer": DEFAULT_REPLY}
    assert Usage.objects.filter(source="api", outcome="complete").count() == 2


async def test_json_schema_with_the_async_sdk(asdk, simulator):
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "forecast",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "high": {"type": "integer"},
                    "sunny": {"type": "boolean"},
                    "answer": {"type": "string"},
                },
                "required": ["city", "high", "sunny", "answer"],
                "additionalProperties": False,
            },
        },
    }
    completion = await asdk.chat.completions.create(
        model=MODEL, messages=QUESTION, response_format=fmt
    )
    reply = json.loads(completion.choices[0].message.content)
    assert reply == {"city": "city 1", "high": 1, "sunny": True, "answer": DEFAULT_REPLY}
    assert sent(simulator)["response_format"] == fmt
    stream = await asdk.chat.completions.create(
        model=MODEL, messages=QUESTION, response_format=fmt, stream=True
    )
    text = ""
    async with stream:
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert json.loads(text) == reply
    assert await Usage.objects.filter(source="api").acount() == 2


def test_seed_gives_the_same_reply_and_stop_cuts_it(sdk, simulator):
    def ask(**kwargs: Any) -> Any:
        return sdk.chat.completions.create(model=MODEL, messages=QUESTION, **kwargs).choices[0]

    same = {ask(seed=7).message.content for _ in range(2)}
    assert len(same) == 1
    assert ask(seed=8).message.content not in same
    cut = ask(stop="2. Tokens")
    assert cut.message.content == DEFAULT_REPLY[: DEFAULT_REPLY.index("2. Tokens")]
    assert cut.finish_reason == "stop"
    assert sent(simulator)["stop"] == "2. Tokens"
    short = ask(max_tokens=3)
    assert short.finish_reason == "length"


# -- tool calls ----------------------------------------------------------------------------


def test_tool_call_round_trip_not_streamed(sdk, simulator, user):
    messages: list[Any] = list(QUESTION)
    first = sdk.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="auto"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "city 1", "days": 1}
    assert sent(simulator)["tools"] == [WEATHER] and sent(simulator)["tool_choice"] == "auto"
    # The SDK's own message object goes back as it is, then the tool's result.
    messages += [choice.message, {"role": "tool", "tool_call_id": call.id, "content": "21 C"}]
    second = sdk.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "The get_weather tool answered: 21 C"
    assert second.choices[0].message.tool_calls is None
    upstream = sent(simulator)["messages"]
    assert upstream[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": call.function.arguments},
            }
        ],
    }
    assert upstream[2] == {"role": "tool", "content": "21 C", "tool_call_id": call.id}
    rows = list(Usage.objects.order_by("id").values_list("source", "outcome", "completion_tokens"))
    assert [r[:2] for r in rows] == [("api", "complete"), ("api", "complete")]
    assert rows[0][2] > 1  # the call's fragments were billed as completion tokens


async def test_tool_call_round_trip_streamed_with_the_async_sdk(asdk, simulator):
    model = 'simulator/tools?call=get_weather&args={"city": "Paris", "days": 3}'
    await ChatModel.objects.acreate(model_id=model, enabled=True)
    messages: list[Any] = list(QUESTION)
    stream = await asdk.chat.completions.create(
        model=model,
        messages=messages,
        tools=[WEATHER, TIME],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    calls = assembled(chunks)
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "days": 3}
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["tool_calls"]
    assert chunks[-1].usage.completion_tokens > 1
    # The first tool chunk names the call; the id and type come once per call.
    firsts = [
        c.choices[0].delta.tool_calls[0]
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    ]
    assert firsts[0].id and firsts[0].type == "function" and firsts[0].function.name
    assert all(f.id is None for f in firsts[1:])
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": calls[0]["id"],
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": calls[0]["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"high": 24}'},
    ]
    stream = await asdk.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER, TIME], stream=True
    )
    text = ""
    async for chunk in stream:
        assert not chunk.choices[0].delta.tool_calls
        text += chunk.choices[0].delta.content or ""
    assert text == 'The get_weather tool answered: {"high": 24}'
    assert await Usage.objects.filter(source="api", outcome="complete").acount() == 2


def test_parallel_calls_and_the_sdks_stream_helper(sdk, simulator):
    model = "simulator/tools?parallel=2"
    ChatModel.objects.create(model_id=model, enabled=True)
    # The SDK's accumulating helper checks the chunks' shape as it joins them.
    with sdk.chat.completions.stream(
        model=model, messages=QUESTION, tools=[WEATHER, TIME]
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert [json.loads(c.function.arguments) for c in calls] == [
        {"city": "city 1", "days": 1},
        {"zone": "zone 2"},
    ]
    assert len({c.id for c in calls}) == 2
    assert final.choices[0].finish_reason == "tool_calls"
    # parallel_tool_calls=false reaches upstream, which then makes one call.
    single = sdk.chat.completions.create(
        model=model, messages=QUESTION, tools=[WEATHER, TIME], parallel_tool_calls=False
    )
    assert len(single.choices[0].message.tool_calls) == 1
    assert sent(simulator)["parallel_tool_calls"] is False


def test_malformed_arguments_are_relayed_as_the_model_wrote_them(sdk, simulator):
    model = "simulator/tools?malformed=1"
    ChatModel.objects.create(model_id=model, enabled=True)
    completion = sdk.chat.completions.create(
        model=model, messages=QUESTION, tools=[WEATHER], tool_choice="required"
    )
    (call,) = completion.choices[0].message.tool_calls
    whole = json.dumps({"city": "city 1", "days": 1})
    assert call.function.arguments == whole[: len(whole) // 2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(call.function.arguments)
    assert sent(simulator)["tool_choice"] == "required"
    assert Usage.objects.get().outcome == "complete"


def test_a_tool_call_stream_with_curl(base_url, token, simulator):
    body = {
        "model": MODEL,
        "stream": True,
        "messages": QUESTION,
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-N",
            "--max-time",
            "30",
            f"{base_url}/chat/completions",
            "-H",
            f"Authorization: Bearer {token}",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps(body),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [line[6:] for line in result.stdout.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    tool_items = [item for c in chunks for item in c["choices"][0]["delta"].get("tool_calls") or []]
    assert tool_items[0]["type"] == "function" and tool_items[0]["id"].startswith("call_")
    assert tool_items[0]["function"]["name"] == "get_weather"
    arguments = "".join(item["function"].get("arguments", "") for item in tool_items)
    assert json.loads(arguments) == {"city": "city 1", "days": 1}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert sent(simulator)["tool_choice"] == body["tool_choice"]
    assert Usage.objects.get().source == "api"


def test_simulator_streams_argument_fragments_across_chunks(simulator):
    """Upstream's side of it: a call's first chunk names it, its arguments follow in pieces."""
    response = httpx.post(
        f"{simulator.base_url}/chat/completions",
        json={
            "model": "simulator/tools?parallel=2",
            "stream": True,
            "messages": QUESTION,
            "tools": [WEATHER, TIME],
        },
        headers={"Authorization": f"Bearer {simulator.api_key}"},
    )
    items = [
        json.loads(line[6:])["choices"][0]["delta"].get("tool_calls")
        for line in response.text.splitlines()
        if line.startswith("data: {") and '"tool_calls":[' in line
    ]
    fragments = [item for group in items for item in group]
    assert [f["index"] for f in fragments if "id" in f] == [0, 1]
    assert sum(1 for f in fragments if f["index"] == 0 and "id" not in f) > 3
    assert all(len(group) == 1 for group in items)


# -- refusals --------------------------------------------------------------------------------

BAD = [
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"seed": "7"}, "seed"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": 3}, "stop"),
    ({"frequency_penalty": 3}, "frequency_penalty"),
    ({"presence_penalty": True}, "presence_penalty"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"min_p": -0.1}, "min_p"),
    ({"top_a": "high"}, "top_a"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"12": 101}}, "logit_bias.12"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
        "response_format.json_schema.name",
    ),
    ({"tools": []}, "tools"),
    (
        {"tools": [{"type": "function", "function": {"name": "no spaces"}}]},
        "tools[0].function.name",
    ),
    ({"tools": [{"type": "code_interpreter"}]}, "tools[0].type"),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    (
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}},
        "tool_choice.function.name",
    ),
    ({"parallel_tool_calls": True}, "parallel_tool_calls"),
    ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"provider": {"order": "openai"}}, "provider.order"),
    ({"provider": {"favourite": "openai"}}, "provider.favourite"),
    ({"models": "openai/gpt-4o"}, "models"),
    ({"models": ["openai/gpt-4o"]}, "models"),  # not enabled
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"usage": {"include": "yes"}}, "usage.include"),
    ({"user": 42}, "user"),
    ({"transforms": "middle-out"}, "transforms"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"max_tokens": "many"}, "max_tokens"),
    ({"temperature": -1}, "temperature"),
    ({"n": 3}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"extra_body": {"top_k": 3}}, "extra_body"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"frobnicate": 1}, "frobnicate"),
    (
        {"messages": [{"role": "tool", "content": "x", "tool_call_id": "nope"}, *QUESTION]},
        "messages[0].tool_call_id",
    ),
    (
        {"messages": [*QUESTION, {"role": "assistant", "tool_calls": [{"id": "c1"}]}]},
        "messages[1].tool_calls[0]",
    ),
]


@pytest.mark.parametrize(("fields", "param"), BAD, ids=[param for _, param in BAD])
def test_a_bad_or_unknown_parameter_is_a_400_naming_it(fields, param, base_url, token, simulator):
    response = httpx.post(
        f"{base_url}/chat/completions",
        json={"model": MODEL, "messages": QUESTION, **fields},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["code"] == "invalid" and error["message"]
    assert simulator.chat_requests == []
    assert not Usage.objects.exists()


def test_refusals_say_why_and_the_sdk_raises_bad_request(sdk):
    with pytest.raises(openai.BadRequestError) as unknown:
        sdk.chat.completions.create(model=MODEL, messages=QUESTION, extra_body={"frobnicate": 1})
    assert unknown.value.body["message"] == "Unrecognized request argument supplied: frobnicate."
    with pytest.raises(openai.BadRequestError) as old:
        sdk.chat.completions.create(
            model=MODEL, messages=QUESTION, functions=[{"name": "f", "parameters": {}}]
        )
    assert "use tools and tool_choice" in old.value.body["message"]
    with pytest.raises(openai.BadRequestError) as logprobs:
        sdk.chat.completions.create(model=MODEL, messages=QUESTION, logprobs=True)
    assert "not relayed" in logprobs.value.body["message"]


async def test_a_stored_exchange_keeps_its_text_turns_not_the_tool_turns(
    user, simulator_settings, settings
):
    """With ``API_STORE_CONVERSATIONS`` a tool round trip's conversation holds what the chat page
    can show (in-process: the setting is the server's)."""
    from django.test import AsyncClient

    settings.STREAMCHAT = {**settings.STREAMCHAT, "API_STORE_CONVERSATIONS": True}
    token = await sync_to_async(personal_token)(user)
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": "{}"},
    }
    response = await AsyncClient().post(
        "/chat/v1/chat/completions",
        {
            "model": MODEL,
            "tools": [WEATHER],
            "messages": [
                *QUESTION,
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
        },
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.content
    answer = "The get_weather tool answered: sunny"
    assert response.json()["choices"][0]["message"]["content"] == answer
    conversation = await Conversation.objects.aget(owner=user)
    chain = [
        (m.role, m.content)
        async for m in Message.objects.filter(conversation=conversation).order_by("id")
    ]
    assert chain == [("user", QUESTION[0]["content"]), ("assistant", answer)]
