"""The security and limit cases through the HTTP entry points (docs/security.md, "HTTP" column):
Server-Sent Events and the session JSON API with a session cookie, the OpenAI-compatible API with
a personal token, all against one live Daphne for the module and the simulator upstream.

- WS-10: a session that ends (logout, password change, deactivation, expiry) and a personal token
  that is revoked, expires or loses its user while in use: the next request is a 401 and nothing
  goes upstream; a stream that was open when it happened runs to its end.
- RL-01 (and WS-20, a flood from one user): N concurrent SSE and OpenAI requests over two worker
  processes with a requests-per-minute limit K admit exactly K; the rest are 429 with
  ``Retry-After``; upstream receives K.
- RL-02: parallel OpenAI requests over two workers against a spend budget never reserve more than
  the budget at any moment.
- RL-11: stop, disconnect and regenerate of one SSE reply, and an OpenAI client that leaves,
  settle each reply exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.models import Session as SessionRow
from django.utils import timezone

from streamchat.limits import consumption
from streamchat.models import (
    ChatModel,
    Conversation,
    Message,
    PersonalToken,
    RateLimit,
    Reservation,
    Usage,
)
from streamchat.simulator.replies import DEFAULT_REPLY, long_reply
from streamchat.streaming.context import estimate_prompt_tokens
from tests.http_helpers import (
    SETTINGS,
    Event,
    Session,
    asession_for,
    assemble,
    events,
    personal_token,
)
from tests.live_ws import wait_for
from tests.servers import DaphneServer

pytest_plugins = ["tests.http_helpers"]  # http_server: one live Daphne for the module
pytestmark = [pytest.mark.django_db(transaction=True)]

STREAM = "/chat/api/stream/"
CONVERSATIONS = "/chat/api/conversations/"
QUESTION = [{"role": "user", "content": "Hello there"}]
MODEL = "openai/gpt-4o-mini"
# The simulator's prices for MODEL (USD per million tokens, as admins enter them).
PROMPT_PRICE, COMPLETION_PRICE = Decimal("0.15"), Decimal("0.6")


def follow_url(reply_id: int) -> str:
    return f"/chat/api/replies/{reply_id}/events/"


def stop_url(reply_id: int) -> str:
    return f"/chat/api/replies/{reply_id}/stop/"


def frames(seen: list[Event]) -> list[dict[str, Any]]:
    return [e.data for e in seen if e.event not in ("comment", "end")]


@pytest.fixture(scope="module")
def second_worker(
    django_db_setup: None, django_db_blocker: Any, _simulator_server: Any
) -> Iterator[DaphneServer]:
    """Another Daphne process on the same database, for the concurrency cases: admissions in one
    process share its one database thread, so only two processes race for real."""
    with django_db_blocker.unblock():
        server = DaphneServer(simulator=_simulator_server, env={"DJANGO_SETTINGS_MODULE": SETTINGS})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def http(http_server: Any) -> Any:
    """``http(session=None, server=None, **options)``: an httpx client of the live server (or of
    ``server``), with the session's cookies when given. Closed after the test."""
    clients: list[httpx.AsyncClient] = []

    def make(
        session: Session | None = None, server: DaphneServer | None = None, **options: Any
    ) -> httpx.AsyncClient:
        options.setdefault("timeout", 20)
        client = httpx.AsyncClient(
            base_url=(server or http_server).url,
            cookies=session.cookies if session else None,
            **options,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def sdk(http_server: Any) -> Any:
    """``sdk(token, server=None)``: the async ``openai`` SDK on the live server (or ``server``),
    without retries (a test sees each answer as it is). Closed on this test's loop: a client
    left to the garbage collector closes on a later test's loop and logs a traceback there."""
    clients: list[openai.AsyncOpenAI] = []

    def make(token: str, server: DaphneServer | None = None, **options: Any) -> openai.AsyncOpenAI:
        base_url = f"{(server or http_server).url}/chat/v1"
        client = openai.AsyncOpenAI(base_url=base_url, api_key=token, max_retries=0, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def read_stream(response: httpx.Response) -> list[Event]:
    seen = []
    async for event in events(response):
        seen.append(event)
        if event.event == "end":
            break
    return seen


async def settled_rows() -> None:
    """Wait until no reply streams and no reservation is open (every run has ended)."""
    await wait_for(
        lambda: (
            not Message.objects.filter(status="streaming").exists()
            and not Reservation.objects.filter(state="open").exists()
        )
    )


# -- WS-10: a session or token that ends while in use -------------------------------------------


async def _log_out(user: Any, session: Session, http: Any) -> None:
    # Through the site's own logout view, as the user's other tab would.
    response = await http(session).post("/logout/", headers=session.headers)
    assert response.status_code == 302


async def _change_password(user: Any, session: Session, http: Any) -> None:
    user.set_password("another-pass-5678")
    await user.asave()


async def _deactivate(user: Any, session: Session, http: Any) -> None:
    user.is_active = False
    await user.asave(update_fields=["is_active"])


async def _expire(user: Any, session: Session, http: Any) -> None:
    await SessionRow.objects.filter(session_key=session.cookies["sessionid"]).aupdate(
        expire_date=timezone.now() - timedelta(seconds=1)
    )


@pytest.mark.parametrize("end_session", [_log_out, _change_password, _deactivate, _expire])
async def test_ws10_sse_and_json_api_after_the_session_ended_are_401(
    http, simulator, user, end_session
):
    model = "simulator/long?tokens=120"
    await ChatModel.objects.acreate(model_id=model, enabled=True)
    simulator.token_delay = 0.005
    session = await asession_for(user)
    client = http(session)
    stale = http(session)  # the same cookies, kept after the session ended (another tab)
    refused: list[tuple[str, int, str]] = []
    seen: list[Event] = []
    async with client.stream(
        "POST",
        STREAM,
        json={"client_id": "w10", "content": "Talk", "model": model},
        headers=session.headers,
    ) as response:
        assert response.status_code == 200
        async for event in events(response):
            seen.append(event)
            if event.event == "delta" and not refused:
                reply_id = seen[0].data["reply"]
                await end_session(user, session, http)
                # Every request of the ended session is refused while the reply streams.
                for method, url, body in (
                    ("POST", STREAM, {"client_id": "w10b", "content": "Again", "model": model}),
                    ("GET", follow_url(reply_id), None),
                    ("POST", stop_url(reply_id), None),
                    ("GET", CONVERSATIONS, None),
                    ("POST", "/chat/api/conversations/new/", {"title": "New"}),
                ):
                    answer = await stale.request(method, url, json=body, headers=session.headers)
                    refused.append((url, answer.status_code, answer.json()["code"]))
            if event.event == "end":
                break
    assert {(status, code) for _, status, code in refused} == {(401, "not_authenticated")}, refused
    assert len(refused) == 5
    # The stream that was open when the session ended was authorised when it began: it ran to its
    # end (the refused stop did not stop it), as a reply outlives a websocket.
    finished = seen[-2].data
    assert finished["status"] == "complete"
    assert assemble(frames(seen)) == long_reply(120)
    assert len(simulator.chat_requests) == 1
    assert await Message.objects.acount() == 2 and await Conversation.objects.acount() == 1
    assert await Usage.objects.acount() == 1


async def _revoke_on_the_tokens_page(user: Any, row: PersonalToken, http: Any) -> None:
    session = await asession_for(user)
    response = await http(session).post(
        "/chat/tokens/",
        data={"action": "revoke", "token": str(row.pk)},
        headers=session.headers,
    )
    assert response.status_code == 302


async def _expire_token(user: Any, row: PersonalToken, http: Any) -> None:
    await PersonalToken.objects.filter(pk=row.pk).aupdate(expires=timezone.now())


async def _deactivate_owner(user: Any, row: PersonalToken, http: Any) -> None:
    user.is_active = False
    await user.asave(update_fields=["is_active"])


@pytest.mark.parametrize(
    "end_token", [_revoke_on_the_tokens_page, _expire_token, _deactivate_owner]
)
async def test_ws10_openai_token_revoked_or_expired_mid_use_is_401_at_the_next_request(
    http, sdk, simulator, user, end_token
):
    model = "simulator/long?tokens=120"
    await ChatModel.objects.acreate(model_id=model, enabled=True)
    simulator.token_delay = 0.005
    token = await sync_to_async(personal_token)(user, expires=timezone.now() + timedelta(days=1))
    row = await PersonalToken.objects.aget()
    client = sdk(token)
    received = ""
    ended = False
    async with await client.chat.completions.create(
        model=model, messages=QUESTION, stream=True
    ) as stream:
        async for chunk in stream:
            received += (chunk.choices[0].delta.content or "") if chunk.choices else ""
            if received and not ended:
                ended = True
                await end_token(user, row, http)
    # The request that was authenticated when it began runs to its end.
    assert received == long_reply(120)
    # The next one, streamed or not, and the model list: 401, nothing upstream.
    for call in (
        lambda: client.chat.completions.create(model=model, messages=QUESTION),
        lambda: client.chat.completions.create(model=model, messages=QUESTION, stream=True),
        lambda: client.models.list(),
    ):
        with pytest.raises(openai.AuthenticationError) as refused:
            await call()
        assert refused.value.status_code == 401
        assert refused.value.body["code"] == "invalid_api_key"
    assert len(simulator.chat_requests) == 1
    assert [u.outcome async for u in Usage.objects.all()] == ["complete"]


# -- RL-01 / WS-20: exact admission under concurrency -------------------------------------------


async def test_rl01_ws20_parallel_sse_and_openai_requests_on_two_workers_admit_exactly_k(
    http_server, second_worker, http, sdk, simulator, user
):
    k, n_sse, n_api = 4, 8, 8
    simulator.token_delay = 0.001
    await ChatModel.objects.acreate(model_id=MODEL, enabled=True, is_default=True)
    await RateLimit.objects.acreate(scope="user", user=user, requests_per_minute=k)
    session = await asession_for(user)
    token = await sync_to_async(personal_token)(user)
    workers = [http_server, second_worker]
    sse_clients = [http(session, server=worker) for worker in workers]
    api_clients = [sdk(token, server=worker) for worker in workers]
    go = asyncio.Event()  # every request waits here, then all are released together

    async def sse(i: int) -> tuple[str, int, Any]:
        await go.wait()
        body = {"client_id": f"sse-{i}", "content": f"Question {i}"}
        async with sse_clients[i % 2].stream(
            "POST", STREAM, json=body, headers=session.headers
        ) as r:
            if r.status_code != 200:
                await r.aread()
                return "sse", r.status_code, (r.headers.get("retry-after"), r.json())
            seen = await read_stream(r)
            return "sse", 200, (seen[-2].data["status"], assemble(frames(seen)))

    async def api(i: int) -> tuple[str, int, Any]:
        await go.wait()
        api_client, streamed = api_clients[i % 2], i % 4 < 2
        messages = [{"role": "user", "content": f"Question {i}"}]
        try:
            if not streamed:
                completion = await api_client.chat.completions.create(
                    model=MODEL, messages=messages
                )
                return "api", 200, ("complete", completion.choices[0].message.content)
            text = ""
            async with await api_client.chat.completions.create(
                model=MODEL, messages=messages, stream=True
            ) as stream:
                async for chunk in stream:
                    text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
            return "api", 200, ("complete", text)
        except openai.RateLimitError as limited:
            return "api", 429, (limited.response.headers.get("retry-after"), limited.body)

    tasks = [asyncio.create_task(sse(i)) for i in range(n_sse)]
    tasks += [asyncio.create_task(api(i)) for i in range(n_api)]
    await asyncio.sleep(0.05)  # every task is waiting on the gate
    go.set()
    results = await asyncio.gather(*tasks)

    admitted = [r for r in results if r[1] == 200]
    refused = [r for r in results if r[1] != 200]
    assert len(admitted) == k, results
    assert {status for _, status, _ in refused} == {429}
    for _, _, (retry_after, body) in refused:
        assert 1 <= int(retry_after) <= 60
        assert body["code"] == "rate_limited"  # the SSE body and OpenAI's error object alike
    assert all(answer == ("complete", DEFAULT_REPLY) for _, _, answer in admitted), admitted
    assert len(simulator.chat_requests) == k  # upstream received exactly K
    await settled_rows()
    assert await Usage.objects.filter(outcome="refused").acount() == n_sse + n_api - k
    assert await Usage.objects.filter(outcome="complete").acount() == k
    assert await Reservation.objects.acount() == k


async def test_rl01_thirty_requests_over_all_four_entry_points_admit_exactly_k(
    http_server, second_worker, http, sdk, simulator_settings, user
):
    """Every entry point is metered by the same limits: websocket, SSE and the OpenAI-compatible
    API on two workers and the Python API in this process, 30 requests released together
    against a limit of 5: exactly 5 reach upstream and 5 replies have usage rows."""
    from streamchat import api
    from streamchat.exceptions import ChatError
    from tests.live_ws import asession_cookie, connect, read_reply
    from tests.live_ws import frames as ws_frames
    from tests.live_ws import send as ws_send

    simulator = simulator_settings
    k, n_each = 5, (8, 7, 8, 7)  # websocket, SSE, OpenAI-compatible, Python
    simulator.token_delay = 0.001
    await ChatModel.objects.acreate(model_id=MODEL, enabled=True, is_default=True)
    await RateLimit.objects.acreate(scope="user", user=user, requests_per_minute=k)
    session = await asession_for(user)
    token = await sync_to_async(personal_token)(user)
    workers = [http_server, second_worker]
    cookie = await asession_cookie(user)
    # One socket per send: a websockets client reads from one coroutine at a time.
    sockets = [await connect(workers[i % 2], cookie) for i in range(n_each[0])]
    sse_clients = [http(session, server=worker) for worker in workers]
    api_clients = [sdk(token, server=worker) for worker in workers]
    go = asyncio.Event()

    async def websocket(i: int) -> tuple[str, str]:
        socket = sockets[i]
        await go.wait()
        await ws_send(socket, {"type": "send", "client_id": f"ws-{i}", "content": f"Q {i}"})
        async for answer in ws_frames(socket):
            if answer["type"] == "error":
                return "ws", answer["code"]
            if answer["type"] == "ack":
                break
        text, finished = await read_reply(socket, answer["reply"])
        return "ws", finished["status"] if text == DEFAULT_REPLY else "garbled"

    async def sse(i: int) -> tuple[str, str]:
        await go.wait()
        body = {"client_id": f"sse-{i}", "content": f"Q {i}"}
        async with sse_clients[i % 2].stream(
            "POST", STREAM, json=body, headers=session.headers
        ) as r:
            if r.status_code != 200:
                await r.aread()
                return "sse", r.json()["code"]
            seen = await read_stream(r)
            return "sse", seen[-2].data["status"]

    async def openai_api(i: int) -> tuple[str, str]:
        await go.wait()
        try:
            await api_clients[i % 2].chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"Q {i}"}]
            )
        except openai.RateLimitError as limited:
            return "api", limited.body["code"]
        return "api", "complete"

    async def python(i: int) -> tuple[str, str]:
        await go.wait()
        try:
            result = await api.acomplete(f"Q {i}", user=user, model=MODEL)
        except ChatError as refused:
            return "python", refused.code
        return "python", "complete" if result.text == DEFAULT_REPLY else "garbled"

    makers = [websocket, sse, openai_api, python]
    tasks = [
        asyncio.create_task(make(i)) for make, n in zip(makers, n_each) for i in range(n)
    ]
    await asyncio.sleep(0.05)
    go.set()
    results = await asyncio.gather(*tasks)
    for socket in sockets:
        await socket.close()

    outcomes = [outcome for _, outcome in results]
    assert outcomes.count("complete") == k, results
    assert set(outcomes) == {"complete", "rate_limited"}, results
    assert len(simulator.chat_requests) == k
    await settled_rows()
    assert await Usage.objects.filter(outcome="complete").acount() == k
    assert await Usage.objects.filter(outcome="refused").acount() == sum(n_each) - k
    sources = {source async for source in Usage.objects.values_list("source", flat=True)}
    assert sources == {"websocket", "sse", "api", "python"}


# -- RL-02: a spend budget under parallel requests ----------------------------------------------


async def test_rl02_parallel_openai_requests_on_two_workers_never_reserve_more_than_the_budget(
    http_server, second_worker, sdk, simulator, user
):
    max_tokens = 50  # sent upstream: the reply is cut there, so the worst case holds
    await ChatModel.objects.acreate(
        model_id=MODEL,
        enabled=True,
        max_tokens=max_tokens,
        prompt_price=PROMPT_PRICE,
        completion_price=COMPLETION_PRICE,
    )
    prompt = estimate_prompt_tokens([{"role": "user", "content": "Q 1"}])
    worst = (prompt * PROMPT_PRICE + max_tokens * COMPLETION_PRICE) / 1_000_000
    budget = Decimal("0.0001")  # the worst case fits 3 times, not 4
    assert 3 * worst <= budget < 4 * worst
    await RateLimit.objects.acreate(scope="user", user=user, spend_per_month=budget)
    token = await sync_to_async(personal_token)(user)
    clients = [sdk(token, server=worker) for worker in (http_server, second_worker)]
    simulator.token_delay = 0.003
    go = asyncio.Event()
    held: list[Decimal] = []  # Σ (open reservations' worst case + settled costs), sampled

    def booked() -> Decimal:
        total = Decimal(0)
        for state, reserved, cost in Reservation.objects.values_list(
            "state", "reserved_cost", "cost"
        ):
            total += reserved if state == "open" else cost
        return total

    async def sample() -> None:
        while True:
            held.append(await sync_to_async(booked)())
            await asyncio.sleep(0.01)

    async def ask(i: int) -> Any:
        await go.wait()
        messages = [{"role": "user", "content": f"Q {i}"}]
        client = clients[i % 2]  # each worker gets streamed and whole answers
        try:
            if i % 4 < 2:
                return await client.chat.completions.create(model=MODEL, messages=messages)
            text = ""
            async with await client.chat.completions.create(
                model=MODEL, messages=messages, stream=True
            ) as stream:
                async for chunk in stream:
                    text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
            return text
        except openai.RateLimitError as limited:
            return limited

    sampler = asyncio.create_task(sample())
    tasks = [asyncio.create_task(ask(i)) for i in range(1, 9)]
    await asyncio.sleep(0.05)
    go.set()
    answers = await asyncio.gather(*tasks)
    await settled_rows()
    sampler.cancel()
    refused = [a for a in answers if isinstance(a, openai.RateLimitError)]
    assert len(answers) - len(refused) == 3, answers
    assert {r.body["code"] for r in refused} == {"rate_limited"}
    assert len(simulator.chat_requests) == 3
    reservations = [r async for r in Reservation.objects.filter(user=user)]
    assert {r.reserved_cost for r in reservations} == {worst}
    assert {r.state for r in reservations} == {"settled"}
    held.append(await sync_to_async(booked)())
    assert max(held) <= budget, max(held)  # Σ reserved ≤ B at every moment sampled
    spent = sum(r.cost for r in reservations)
    assert 0 < spent <= budget
    assert spent == sum([u.cost async for u in Usage.objects.filter(outcome="complete")])


# -- RL-11: settled once however a reply ends ---------------------------------------------------


async def test_rl11_sse_stop_disconnect_and_regenerate_settle_each_reply_once(
    http, simulator, user
):
    model = "simulator/long?tokens=2000"
    await ChatModel.objects.acreate(model_id=model, enabled=True, is_default=True)
    await RateLimit.objects.acreate(scope="user", user=user, requests_per_day=100)
    simulator.token_delay = 0.01
    session = await asession_for(user)
    client = http(session)
    controls = http(session)

    async with client.stream(
        "POST", STREAM, json={"client_id": "r1", "content": "Stop me"}, headers=session.headers
    ) as response:
        seen = []
        async for event in events(response):
            seen.append(event)
            if event.event == "delta":
                break
        first = seen[0].data["reply"]
        # Stop twice and leave, all at once.
        stops = await asyncio.gather(
            controls.post(stop_url(first), headers=session.headers),
            controls.post(stop_url(first), headers=session.headers),
            response.aclose(),
        )
    statuses = {r.status_code for r in stops[:2]}
    assert 204 in statuses and statuses <= {204, 404}, statuses
    await settled_rows()

    regenerate = {"type": "regenerate", "client_id": "r2", "reply": first}
    second = None
    async with client.stream("POST", STREAM, json=regenerate, headers=session.headers) as response:
        seen = []
        async for event in events(response):
            seen.append(event)
            if event.event == "delta" and second is None:
                second = seen[0].data["reply"]
                stopped = await controls.post(stop_url(second), headers=session.headers)
                assert stopped.status_code == 204
            if event.event == "end":
                break
    assert seen[-2].data["status"] == "stopped"
    # The same regenerate again (a retry): the same reply, not a third one, nothing upstream.
    async with client.stream("POST", STREAM, json=regenerate, headers=session.headers) as response:
        again = await read_stream(response)
    assert again[0].data["duplicate"] is True and again[0].data["reply"] == second
    assert again[-2].data["status"] == "stopped"
    await settled_rows()

    assert len(simulator.chat_requests) == 2
    usage = [u async for u in Usage.objects.all()]
    for reply_id in (first, second):
        reply = await Message.objects.aget(pk=reply_id)
        assert reply.status == "stopped"
        assert [u.outcome for u in usage if u.message_id == reply_id] == ["stopped"]
    reservations = [r async for r in Reservation.objects.filter(user=user)]
    assert len(reservations) == 2 and {r.state for r in reservations} == {"settled"}
    assert all(r.settled is not None for r in reservations)
    assert (await sync_to_async(consumption)(user))["requests_per_day"] == 2


@pytest.mark.parametrize("streamed", [True, False])
async def test_rl11_an_openai_client_that_leaves_settles_its_reply_once(
    http_server, sdk, simulator, user, streamed
):
    model = "simulator/long?tokens=3000"
    await ChatModel.objects.acreate(model_id=model, enabled=True)
    await RateLimit.objects.acreate(scope="user", user=user, requests_per_day=100)
    simulator.token_delay = 0.005
    token = await sync_to_async(personal_token)(user)
    if streamed:
        received = ""
        async with await sdk(token).chat.completions.create(
            model=model, messages=QUESTION, stream=True
        ) as stream:
            async for chunk in stream:
                received += (chunk.choices[0].delta.content or "") if chunk.choices else ""
                if len(received) > 50:
                    break  # leaving the block closes the connection
    else:
        # A non-streamed request whose client gives up waiting.
        with pytest.raises(openai.APITimeoutError):
            await sdk(token, timeout=0.5).chat.completions.create(model=model, messages=QUESTION)
    gone = await simulator.await_disconnect(timeout=5.0)  # nobody could read the rest: stopped
    assert gone.tokens_sent < 3000
    await settled_rows()
    usage = await wait_for(lambda: list(Usage.objects.all()))
    assert [(u.outcome, u.source) for u in usage] == [("stopped", "api")]
    reservation = await Reservation.objects.aget(user=user)
    assert reservation.state == "settled" and reservation.settled is not None
    assert (await sync_to_async(consumption)(user))["requests_per_day"] == 1
    assert len(simulator.chat_requests) == 1


@pytest.mark.parametrize("entry", ["api", "api-stored", "send"])
async def test_rl11_a_reply_stopped_as_it_starts_never_calls_upstream_and_settles_once(
    user, simulator_settings, entry
):
    """The calls the OpenAI-compatible view makes when its client leaves while the request is
    being admitted (the run is stopped the moment it is started), and a stop that reaches a reply
    (send through the engine) before its first step ran: in-process, so the moment is exact."""
    from streamchat.streaming import engine
    from streamchat.streaming.hub import get_hub

    await ChatModel.objects.acreate(model_id=MODEL, enabled=True, is_default=True)
    await RateLimit.objects.acreate(scope="user", user=user, requests_per_day=100)
    await get_hub().ensure_started()
    if entry == "send":
        accepted = await engine.asend(user, client_id="now", content="Stop at once")
        run = accepted.reply
    else:
        run = await engine.acomplete_messages(
            user, messages=QUESTION, model=MODEL, keep=entry == "api-stored"
        )
    run.stop()
    await asyncio.wait_for(run.done.wait(), 10)
    assert simulator_settings.chat_requests == []  # nothing streamed that nobody wanted
    assert (run.status, run.length) == ("stopped", 0)
    usage = [u async for u in Usage.objects.all()]
    assert [(u.outcome, u.cost) for u in usage] == [("stopped", 0)]
    reservation = await Reservation.objects.aget(user=user)
    assert (reservation.state, reservation.cost) == ("settled", 0)
    if entry != "api":
        reply = await Message.objects.aget(role="assistant")
        assert (reply.status, reply.content) == ("stopped", "")
