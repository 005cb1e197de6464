"""Chat models in admin: "Sync from OpenRouter" (button, action, command) against the simulator's
/models, the model form, and the enable / disable / default actions."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from streamchat.catalog import per_million, sync_models
from streamchat.models import ChatModel
from streamchat.simulator.catalog import model_list

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:streamchat_chatmodel_changelist"


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        ("0.00003", Decimal("30.000000")),
        ("0.00000015", Decimal("0.150000")),
        ("0", Decimal("0.000000")),
        ("0.0000000001", Decimal("0.000100")),
        ("-1", None),  # OpenRouter's "variable price" marker
        ("", None),
        (None, None),
        ("n/a", None),
        ("1", None),  # a million dollars per million tokens does not fit: unknown, not wrong
    ],
)
def test_prices_per_token_become_prices_per_million(price, expected):
    assert per_million(price) == expected


def check_against_simulator(models: dict[str, ChatModel]) -> None:
    listed = {entry["id"]: entry for entry in model_list()}
    assert set(models) == set(listed)
    for model_id, entry in listed.items():
        row = models[model_id]
        assert row.display_name == entry["name"]
        assert row.prompt_price == Decimal(entry["pricing"]["prompt"]) * 1_000_000
        assert row.completion_price == Decimal(entry["pricing"]["completion"]) * 1_000_000
        assert row.context_length == entry["context_length"]
        assert row.max_completion_tokens == entry["top_provider"]["max_completion_tokens"]
        assert row.last_synced is not None


def test_sync_command_fills_models_from_the_simulator(simulator_settings):
    out = StringIO()
    call_command("sync_openrouter_models", stdout=out)
    models = {m.model_id: m for m in ChatModel.objects.all()}
    check_against_simulator(models)
    assert not any(m.enabled for m in models.values())  # new models arrive disabled
    assert f"{len(models)} new (disabled)" in out.getvalue()
    assert any(r.path == "/api/v1/models" for r in simulator_settings.requests)


def test_sync_keeps_admin_choices(simulator_settings):
    ChatModel.objects.create(
        model_id="openai/gpt-4o",
        display_name="Our GPT",
        enabled=True,
        is_default=True,
        default_temperature=Decimal("0.3"),
        max_tokens=500,
        system_prompt="Be brief.",
        fallback_models=["openai/gpt-4o-mini"],
        prompt_price=Decimal("1"),
        context_length=1,
    )
    ChatModel.objects.create(model_id="gone/model", enabled=True)
    out = StringIO()
    call_command("sync_openrouter_models", stdout=out)
    ours = ChatModel.objects.get(model_id="openai/gpt-4o")
    assert (ours.display_name, ours.enabled, ours.is_default) == ("Our GPT", True, True)
    assert (ours.default_temperature, ours.max_tokens, ours.system_prompt) == (
        Decimal("0.30"),
        500,
        "Be brief.",
    )
    assert ours.fallback_models == ["openai/gpt-4o-mini"]
    assert ours.prompt_price == Decimal("2.500000") and ours.context_length == 128_000
    gone = ChatModel.objects.get(model_id="gone/model")
    assert gone.enabled and gone.last_synced is None  # left alone, and reported
    assert "no longer listed by OpenRouter: gone/model" in out.getvalue()
    # A second sync changes nothing.
    out = StringIO()
    call_command("sync_openrouter_models", stdout=out)
    assert "0 new (disabled), 0 updated" in out.getvalue()


def test_sync_only_named_models(simulator_settings):
    ChatModel.objects.create(model_id="openai/gpt-4o-mini")
    call_command("sync_openrouter_models", "openai/gpt-4o-mini", stdout=StringIO())
    assert list(ChatModel.objects.values_list("model_id", flat=True)) == ["openai/gpt-4o-mini"]
    assert ChatModel.objects.get().context_length == 128_000


def test_sync_command_reports_upstream_failure(settings):
    settings.STREAMCHAT = {**settings.STREAMCHAT, "BASE_URL": "http://127.0.0.1:9/api/v1"}
    with pytest.raises(CommandError, match="OpenRouter"):
        call_command("sync_openrouter_models", stdout=StringIO())
    assert not ChatModel.objects.exists()


def test_sync_button_in_admin(admin_client, simulator_settings):
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "Sync from OpenRouter" in page
    assert admin_client.get(reverse("admin:streamchat_chatmodel_sync")).status_code == 405
    response = admin_client.post(reverse("admin:streamchat_chatmodel_sync"), follow=True)
    assert response.status_code == 200
    assert "Synced from OpenRouter" in response.content.decode()
    check_against_simulator({m.model_id: m for m in ChatModel.objects.all()})


def test_refresh_selected_action(admin_client, simulator_settings):
    row = ChatModel.objects.create(model_id="deepseek/deepseek-r1")
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "sync_selected", "_selected_action": [row.pk], "index": "0"},
        follow=True,
    )
    assert "Synced from OpenRouter: 0 new (disabled), 1 updated" in response.content.decode()
    row.refresh_from_db()
    assert row.context_length == 163_840 and ChatModel.objects.count() == 1


def test_sync_failure_is_a_message_not_a_500(admin_client, settings):
    settings.STREAMCHAT = {**settings.STREAMCHAT, "BASE_URL": "http://127.0.0.1:9/api/v1"}
    response = admin_client.post(reverse("admin:streamchat_chatmodel_sync"), follow=True)
    assert response.status_code == 200
    assert "Sync from OpenRouter failed" in response.content.decode()


def test_sync_ignores_malformed_entries():
    result = sync_models(
        [
            {"id": ""},
            {"name": "no id"},
            {"id": "x/" + "y" * 300},
            {
                "id": "ok/model",
                "pricing": {"prompt": "-1", "completion": "abc"},
                "context_length": -5,
                "top_provider": {"max_completion_tokens": "lots"},
            },
        ]
    )
    assert result.created == ["ok/model"] and result.skipped == 3
    row = ChatModel.objects.get()
    assert (row.prompt_price, row.completion_price, row.context_length) == (None, None, None)
    assert row.max_completion_tokens is None


@pytest.mark.parametrize(
    ("top_provider", "expected"),
    [
        ({"context_length": 128_000, "max_completion_tokens": 16_384}, 16_384),
        ({"max_completion_tokens": None}, None),  # OpenRouter publishes null for many models
        ({"max_completion_tokens": 0}, None),
        ({"max_completion_tokens": True}, None),
        ({"max_completion_tokens": float("inf")}, None),
        ({"max_completion_tokens": 2**40}, 2_147_483_647),
        (None, None),
        ("junk", None),
    ],
)
def test_sync_reads_the_top_providers_completion_cap(top_provider, expected):
    sync_models([{"id": "ok/model", "top_provider": top_provider}])
    assert ChatModel.objects.get().max_completion_tokens == expected


def test_sync_refreshes_the_completion_cap_and_keeps_admin_max_tokens(simulator_settings):
    ChatModel.objects.create(model_id="openai/gpt-4o", max_tokens=500, max_completion_tokens=1)
    call_command("sync_openrouter_models", stdout=StringIO())
    row = ChatModel.objects.get(model_id="openai/gpt-4o")
    assert (row.max_tokens, row.max_completion_tokens) == (500, 16_384)


def model_form(**fields):
    data = {
        "model_id": "openai/gpt-4o",
        "display_name": "GPT-4o",
        "enabled": "on",
        "default_temperature": "",
        "max_tokens": "",
        "system_prompt": "",
        "fallback_models": "",
        "prompt_price": "",
        "completion_price": "",
        "context_length": "",
        "max_completion_tokens": "",
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


def test_model_form_saves_fallbacks_one_per_line(admin_client):
    data = model_form(
        fallback_models="openai/gpt-4o-mini\nanthropic/claude-3.5-sonnet, openai/gpt-4o-mini"
    )
    response = admin_client.post(reverse("admin:streamchat_chatmodel_add"), data)
    assert response.status_code == 302
    row = ChatModel.objects.get()
    assert row.fallback_models == ["openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet"]
    page = admin_client.get(reverse("admin:streamchat_chatmodel_change", args=[row.pk]))
    assert "openai/gpt-4o-mini\nanthropic/claude-3.5-sonnet</textarea>" in page.content.decode()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model_id": "gpt 4o"}, "model id, like openai/gpt-4o (no spaces)"),
        ({"default_temperature": "2.5"}, "Temperature goes from 0 to 2"),
        ({"enabled": None, "is_default": "on"}, "The default model must be enabled"),
        ({"fallback_models": "openai/gpt-4o"}, "cannot be its own fallback"),
        ({"fallback_models": "good/one\n<script>"}, "is not a model id"),
        ({"model_id": "openai/gpt-4o?after=10"}, "Only the simulator&#x27;s models"),
        ({"model_id": "simulator/stall?after"}, "name=value pairs"),
        ({"model_id": "simulator/stall?after=1;drop=1"}, "name=value pairs"),
        ({"model_id": "simulator/stall?<b>=1"}, "name=value pairs"),
        ({"fallback_models": "openai/gpt-4o-mini?x=1"}, "is not a model id"),
    ],
)
def test_model_form_errors(admin_client, fields, message):
    response = admin_client.post(reverse("admin:streamchat_chatmodel_add"), model_form(**fields))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ChatModel.objects.exists()


def test_actions_enable_disable_and_one_default(admin_client):
    a = ChatModel.objects.create(model_id="a/a")
    b = ChatModel.objects.create(model_id="b/b", enabled=True, is_default=True)

    def act(action, *rows):
        return admin_client.post(
            reverse(CHANGELIST),
            {"action": action, "_selected_action": [r.pk for r in rows], "index": "0"},
            follow=True,
        ).content.decode()

    act("enable", a)
    a.refresh_from_db()
    assert a.enabled
    page = act("make_default", a, b)
    assert "Select exactly one model" in page
    act("make_default", a)
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.is_default and not b.is_default
    page = act("disable", a, b)
    assert "is the default model" in page
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.enabled and not b.enabled


def test_default_model_cannot_be_disabled_from_the_list(admin_client):
    default = ChatModel.objects.create(model_id="a/a", enabled=True, is_default=True)
    other = ChatModel.objects.create(model_id="b/b", enabled=True)
    data = {
        "form-TOTAL_FORMS": "2",
        "form-INITIAL_FORMS": "2",
        "form-MIN_NUM_FORMS": "0",
        "form-MAX_NUM_FORMS": "1000",
        "_save": "Save",
    }
    for n, row in enumerate([default, other]):
        data[f"form-{n}-id"] = str(row.pk)  # "enabled" left unchecked on both
    response = admin_client.post(reverse(CHANGELIST), data)
    assert response.status_code == 200
    assert "is the default model" in response.content.decode()
    assert ChatModel.objects.filter(enabled=True).count() == 2
    # Unchecking only the other one works.
    data["form-0-enabled"] = "on"
    assert admin_client.post(reverse(CHANGELIST), data).status_code == 302
    assert list(ChatModel.objects.filter(enabled=True)) == [default]


@pytest.mark.parametrize(
    "model_id",
    [
        "simulator/stall?after=10",
        "simulator/stall?after=10&comments=1",
        "simulator/error-mid?after=4&code=429&message=Rate+limit+exceeded",
        "simulator/server-error?status=503&times=1&n=2",
    ],
)
def test_model_form_accepts_simulator_ids_with_parameters(admin_client, model_id):
    # docs/simulator.md: a scenario's parameters ride in a query string inside the id.
    fields = model_form(model_id=model_id, fallback_models="simulator/echo?delay_ms=1")
    response = admin_client.post(reverse("admin:streamchat_chatmodel_add"), fields)
    assert response.status_code == 302, response.content.decode()[:2000]
    row = ChatModel.objects.get()
    assert (row.model_id, row.fallback_models) == (model_id, ["simulator/echo?delay_ms=1"])


@pytest.mark.django_db(transaction=True)
async def test_a_simulator_model_with_parameters_added_in_admin_answers_a_chat_send(
    admin_client, user, chat_socket, simulator_settings
):
    from asgiref.sync import sync_to_async

    from streamchat.simulator.replies import DEFAULT_REPLY

    model_id = "simulator/stall?after=3&for=0.1"  # stalls 0.1 s after three pieces, then the rest
    response = await sync_to_async(admin_client.post)(
        reverse("admin:streamchat_chatmodel_add"), model_form(model_id=model_id)
    )
    assert response.status_code == 302
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "c", "content": "Question", "model": model_id})
    ack = await socket.recv_until("ack")
    text, finished = await socket.reply(ack["reply"], timeout=10)
    assert finished["status"] == "complete" and text == DEFAULT_REPLY
    assert simulator_settings.chat_requests[-1].json["model"] == model_id
    await socket.close()
