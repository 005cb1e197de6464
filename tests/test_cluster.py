"""The cluster of docs/deploy.md, over real processes: Debian's nginx with deploy/nginx.conf in
front of two Daphne workers on PostgreSQL and the Redis channel layer, both reached through TCP
proxies the test owns; the simulator streams slowly. Clients talk to nginx only, as browsers do.

- through nginx, a websocket reply and an SSE reply stream token by token (SSE is not buffered: the
  first delta arrives while upstream still streams) and are stored whole; a foreign Origin is
  still refused behind the proxy;
- a reply is followed from the other worker;
- a rolling restart (SIGTERM one worker, wait for its exit, start it again, then the other) while
  20 clients stream: no reply lost or stuck, every client's text stored, sockets closed with the
  restart code reconnect through nginx and resume to the reply's end;
- SIGKILL mid-reply: the other worker's reaper ends the reply ``interrupted``; the stored text is
  behind what the client saw by at most one checkpoint interval of tokens;
- Redis cut mid-reply for a few seconds: the reply completes to its own socket, stored whole;
- PostgreSQL cut as a reply ends: once it is back, the stored text is what the client received.

Marked ``once``: it runs in the SQLite run of ``make test`` and brings its own PostgreSQL database
(the workers never use the suite's). nginx, PostgreSQL and Redis missing: a skip that says so (a
failure under CI, which installs nginx and starts the others).
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamchat.simulator.replies import long_reply, tokenize
from tests.cluster import UPSTREAM_HEADER, Cluster, create_database, drop_database, nginx_binary
from tests.services import IN_CI, require_service

pytestmark = [pytest.mark.once]

# The workers' knobs (tests/settings.py and tests/cluster_settings.py read them).
LEASE_SECONDS = 5
CHECKPOINT_MS = 250
DRAIN_SECONDS = 2.0
DELTA_COALESCE_MS = 40  # streamchat's default (a delta frame may carry this much)
PASSWORD = "cluster-pass-1234"
CLIENTS = 20
USERS = [f"cluster{n:02d}" for n in range(CLIENTS)]


def model(tokens: int, delay_ms: int) -> str:
    """A simulator model streaming ``long_reply(tokens)`` at ``delay_ms`` per token."""
    return f"simulator/long?tokens={tokens}&delay_ms={delay_ms}"


SLOW = model(120, 25)  # 3 s: long enough to watch, follow, cut
ROLLING = model(100, 20)  # 2 s per reply, DRAIN_SECONDS = 2: some finish in the drain, some not
KILLED = model(1000, 25)  # 25 s: it is killed long before its end
MODELS = [SLOW, ROLLING, KILLED]


def transcript(model_id: str) -> str:
    return long_reply(int(re.search(r"tokens=(\d+)", model_id).group(1)))  # type: ignore[union-attr]


def restart_codes() -> set[int]:
    """The close code a draining worker uses (docs/protocol.md)."""
    from streamchat.consumers import CLOSE_RESTARTING

    return {CLOSE_RESTARTING}


# -- the cluster ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(_simulator_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if nginx_binary() is None:
        message = "nginx is not installed (apt-get install nginx; .ci/run does)"
        if IN_CI:
            pytest.fail(f"{message}, and CI must run the cluster tests.")
        pytest.skip(message)
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=14)
    client.flushdb()
    client.close()

    database = f"test_streamchat_cluster_{os.getpid()}"
    create_database(database, drop_first=True)
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.cluster_settings",
        "STREAMCHAT_LIVE_BASE_URL": _simulator_server.base_url,
        "STREAMCHAT_LIVE_API_KEY": _simulator_server.api_key,
        "STREAMCHAT_LIVE_LEASE_SECONDS": str(LEASE_SECONDS),
        "STREAMCHAT_LIVE_CHECKPOINT_MS": str(CHECKPOINT_MS),
        "STREAMCHAT_LIVE_DRAIN_SECONDS": str(DRAIN_SECONDS),
    }
    directory = tmp_path_factory.mktemp("cluster")
    cluster = Cluster(directory, database=database, env=env, proxies=True, diagnostic=True)
    try:
        from tests.cluster import postgres_url, prepare_database

        prepare_database(
            {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "tests.cluster_settings",
                "DATABASE_URL": postgres_url(database),
            },
            users=USERS,
            password=PASSWORD,
            models=MODELS,
        )
        cluster.start()
        yield cluster
    finally:
        cluster.stop(timeout=DRAIN_SECONDS + 20)
        drop_database(database)


@pytest.fixture
def sim(simulator: Any, cluster: Cluster) -> Any:
    """The simulator, reset for this test (after the cluster is up)."""
    return simulator


@pytest.fixture
def running(cluster: Cluster) -> Cluster:
    """Both workers running (a test before may have stopped one), logs shown on failure."""
    for index, worker in enumerate(cluster.workers):
        if worker is None or worker.process.poll() is not None:
            cluster.start_worker(index)
    return cluster


# -- clients --------------------------------------------------------------------------------------


@dataclass
class Session:
    cookies: dict[str, str]

    @property
    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())


async def login(cluster: Cluster, username: str) -> Session:
    """Log in through nginx with the login form, as a browser does."""
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as client:
        page = await client.get("/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, page.text[:500]
        response = await client.post(
            "/login/",
            data={
                "username": username,
                "password": PASSWORD,
                "csrfmiddlewaretoken": token.group(1),
            },
        )
        assert response.status_code == 302, (response.status_code, response.text[:500])
        await client.get("/chat/")  # the csrftoken cookie, as the page has it
        return Session({name: value for name, value in client.cookies.items()})


async def open_socket(cluster: Cluster, session: Session, origin: str | None = None) -> Any:
    return await websockets.connect(
        f"{cluster.ws_url}/ws/streamchat/",
        origin=origin or cluster.url,  # type: ignore[arg-type]
        additional_headers={"Cookie": session.cookie_header},
        open_timeout=10,
        close_timeout=2,
    )


def worker_of(cluster: Cluster, socket: Any) -> int:
    """The worker behind a socket (nginx's diagnostic header on the handshake)."""
    return cluster.worker_index(socket.response.headers[UPSTREAM_HEADER])


async def recv(socket: Any, timeout: float = 10) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(socket.recv(), timeout))


async def connect(cluster: Cluster, session: Session) -> Any:
    socket = await open_socket(cluster, session)
    hello = await recv(socket)
    assert hello["type"] == "hello", hello
    return socket


def append(text: str, frame: dict[str, Any]) -> str:
    """``text`` with a delta frame added (an overlap must repeat what is held; a gap fails)."""
    offset, piece = frame["offset"], frame["text"]
    assert offset <= len(text), f"gap: delta at {offset}, held {len(text)}"
    overlap = len(text) - offset
    assert piece[:overlap] == text[offset:][: len(piece)], "a repeated delta changed the text"
    return text + piece[overlap:]


async def read_reply(
    socket: Any, reply_id: int, text: str = "", timeout: float = 10
) -> tuple[str, dict[str, Any]]:
    while True:
        frame = await recv(socket, timeout)
        if frame.get("reply") != reply_id:
            continue
        if frame["type"] == "delta":
            text = append(text, frame)
        elif frame["type"] == "reply.finished":
            return text, frame


async def start_reply(socket: Any, client_id: str, model_id: str) -> int:
    await socket.send(
        json.dumps({"type": "send", "client_id": client_id, "content": "Go", "model": model_id})
    )
    while True:
        frame = await recv(socket)
        assert frame["type"] != "error", frame
        if frame["type"] == "ack":
            return frame["reply"]


def streaming_rows_of_a_stopped_worker(cluster: Cluster) -> list[int]:
    """Rows still ``streaming`` whose lease nobody renews, just after a worker exited: a live
    worker renews its replies' leases every CHECKPOINT_MS, so after a second the leases of the
    stopped worker's rows (renewed before it exited) are a second older than any live one."""
    time.sleep(1.0)
    rows = cluster.query(
        "SELECT id FROM streamchat_message WHERE status = 'streaming'"
        " AND lease_expires < now() + make_interval(secs => %s)",
        [LEASE_SECONDS - 0.6],
    )
    return [row[0] for row in rows]


async def served_by(cluster: Cluster, index: int, timeout: float = 15) -> None:
    """Wait until nginx passes requests to worker ``index`` (as a deploy script waits)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=cluster.url, timeout=5) as client:
        while True:
            response = await client.get("/login/")
            if cluster.worker_index(response.headers[UPSTREAM_HEADER]) == index:
                return
            assert time.monotonic() < deadline, f"nginx sends nothing to worker {index}"
            await asyncio.sleep(0.1)


def tokens_between(full: str, start: int, end: int) -> int:
    """How many of the simulator's tokens of ``full`` end in (start, end]."""
    count, position = 0, 0
    for piece in tokenize(full):
        position += len(piece)
        if start < position <= end:
            count += 1
    return count


def generations(sim: Any) -> list[Any]:
    return list(sim.state.generations.values())


# -- (a) one reply of each kind through nginx -----------------------------------------------------


async def test_websocket_and_sse_replies_stream_through_nginx_and_are_stored(
    running: Cluster, sim: Any
) -> None:
    cluster = running
    session = await login(cluster, USERS[0])
    full = transcript(SLOW)

    # A foreign Origin is refused behind the proxy as well (nginx passes Origin and Host as is).
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(cluster, session, origin="http://evil.example")
    assert refused.value.response.status_code == 403

    socket = await connect(cluster, session)
    reply_id = await start_reply(socket, "ws-1", SLOW)
    first = await recv(socket)
    while first["type"] != "delta":
        first = await recv(socket)
    [generation] = generations(sim)
    assert generation.ended_at is None  # the first delta came while upstream still streamed
    text, finished = await read_reply(socket, reply_id, append("", first))
    await socket.close()
    assert text == full and finished["status"] == "complete"
    assert cluster.reply(reply_id) == ("complete", full)

    # Server-Sent Events: the same reply as events, through nginx's unbuffered location.
    before = {g.id for g in generations(sim)}
    seen: list[tuple[str, Any]] = []
    upstream_streaming_at_first_delta: bool | None = None
    async with httpx.AsyncClient(base_url=cluster.url, cookies=session.cookies, timeout=20) as http:
        async with http.stream(
            "POST",
            "/chat/api/stream/",
            json={"type": "send", "client_id": "sse-1", "content": "Go", "model": SLOW},
            headers={"X-CSRFToken": session.cookies["csrftoken"]},
        ) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            assert "content-length" not in response.headers
            assert UPSTREAM_HEADER in response.headers  # nginx answered, from a worker
            event = "message"
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    data = json.loads(line.partition(":")[2])
                    if event == "delta" and upstream_streaming_at_first_delta is None:
                        new = [g for g in generations(sim) if g.id not in before]
                        upstream_streaming_at_first_delta = bool(new) and all(
                            g.ended_at is None for g in new
                        )
                    seen.append((event, data))
                    if event == "end":
                        break
    kinds = [kind for kind, _ in seen]
    assert kinds.count("delta") > 1 and kinds[-2:] == ["reply.finished", "end"], kinds
    # Not buffered by nginx: the first event came while the simulator still had tokens to send.
    assert upstream_streaming_at_first_delta is True
    sse_text = ""
    for kind, data in seen:
        if kind == "delta":
            sse_text = append(sse_text, data)
    ack = dict(seen)["ack"]
    assert sse_text == full
    assert cluster.reply(ack["reply"]) == ("complete", full)


# -- (b) followed from the other worker -----------------------------------------------------------


async def test_a_reply_is_followed_from_the_other_worker_through_nginx(
    running: Cluster, sim: Any
) -> None:
    cluster = running
    session = await login(cluster, USERS[1])
    full = transcript(SLOW)
    sender = await connect(cluster, session)
    reply_id = await start_reply(sender, "follow-1", SLOW)
    # nginx balances: the next sockets land on the other worker (tried a few times).
    for _ in range(6):
        follower = await connect(cluster, session)
        if worker_of(cluster, follower) != worker_of(cluster, sender):
            break
        await follower.close()
    else:
        pytest.fail("nginx never sent a socket to the other worker")
    await follower.send(json.dumps({"type": "resume", "reply": reply_id, "offset": 0}))
    followed, finished = await read_reply(follower, reply_id)
    sent, _ = await read_reply(sender, reply_id)
    assert followed == sent == full and finished["status"] == "complete"
    assert cluster.reply(reply_id) == ("complete", full)
    await sender.close()
    await follower.close()


# -- (c) rolling restart --------------------------------------------------------------------------


@dataclass
class Received:
    client_id: str
    reply: int | None = None
    text: str = ""
    finished: dict[str, Any] | None = None


@dataclass
class Page:
    """A chat page: sends, follows its reply to the end, and when its socket closes reconnects
    through nginx and resumes (a refused send, ``server_restarting``, is sent again)."""

    cluster: Cluster
    session: Session
    name: str
    replies: list[Received] = field(default_factory=list)
    closes: list[int | None] = field(default_factory=list)
    refused: int = 0  # sends answered server_restarting
    connects: int = 0
    socket: Any = None

    async def ensure_socket(self, deadline: float) -> None:
        while self.socket is None:
            assert time.monotonic() < deadline, f"{self.name}: no socket within the deadline"
            self.connects += 1
            try:
                socket = await open_socket(self.cluster, self.session)
                hello = await recv(socket, 5)
                assert hello["type"] == "hello", hello
                self.socket = socket
            except ConnectionClosed as closed:  # a draining worker closes new sockets at once
                self.closes.append(closed.rcvd.code if closed.rcvd else None)
                await asyncio.sleep(0.1)
            except (TimeoutError, OSError, InvalidStatus):
                await asyncio.sleep(0.2)

    async def reply(self, client_id: str, model_id: str, timeout: float = 60) -> Received:
        received = Received(client_id)
        self.replies.append(received)
        deadline = time.monotonic() + timeout
        asked = False
        while True:
            await self.ensure_socket(deadline)
            try:
                if not asked:
                    frame: dict[str, Any] = {"type": "send", "client_id": client_id}
                    if received.reply is None:
                        frame.update(content="Go", model=model_id)
                    else:
                        frame = {
                            "type": "resume",
                            "reply": received.reply,
                            "offset": len(received.text),
                        }
                    await self.socket.send(json.dumps(frame))
                    asked = True
                frame = await recv(self.socket, max(1.0, deadline - time.monotonic()))
            except ConnectionClosed as closed:
                self.closes.append(closed.rcvd.code if closed.rcvd else None)
                self.socket, asked = None, False
                continue
            kind = frame["type"]
            if kind == "error":
                assert frame["code"] == "server_restarting", frame
                self.refused += 1
                await self.socket.close()
                self.socket, asked = None, False  # the next socket lands elsewhere
                continue
            if kind == "ack" and frame.get("client_id") == client_id:
                received.reply = frame["reply"]
                if frame.get("duplicate"):  # sent again after a close: it may have ended since
                    asked = False
                continue
            if frame.get("reply") != received.reply or received.reply is None:
                continue
            if kind == "delta":
                if frame["offset"] > len(received.text):  # a gap: ask for it (protocol rule)
                    await self.socket.send(
                        json.dumps(
                            {
                                "type": "resume",
                                "reply": received.reply,
                                "offset": len(received.text),
                            }
                        )
                    )
                    continue
                received.text = append(received.text, frame)
            elif kind == "reply.finished":
                if frame["length"] > len(received.text):
                    asked = False  # finished, but some text never arrived: resume it
                    continue
                received.finished = frame
                return received

    async def run(self, model_id: str, stop: asyncio.Event) -> None:
        """Reply after reply until ``stop``, then close."""
        n = 0
        while not stop.is_set():
            n += 1
            await self.reply(f"{self.name}-{n}", model_id)
        if self.socket is not None:
            await self.socket.close()


async def test_rolling_restart_loses_no_reply_and_leaves_none_streaming(
    running: Cluster, sim: Any
) -> None:
    cluster = running
    earlier = set(cluster.replies())
    sessions = await asyncio.gather(*(login(cluster, name) for name in USERS))
    pages = [Page(cluster, s, name) for s, name in zip(sessions, USERS, strict=True)]
    stop = asyncio.Event()
    clients = [asyncio.create_task(page.run(ROLLING, stop)) for page in pages]
    exits: list[tuple[int, int, float]] = []  # worker, exit status, seconds from SIGTERM to exit
    left_behind: list[int] = []  # rows a stopped worker left streaming (for a reaper to end)
    try:
        await asyncio.sleep(1.0)  # every client has a reply streaming
        assert not any(task.done() for task in clients), [t for t in clients if t.done()]
        for index in (0, 1):
            started = time.monotonic()
            cluster.signal(index, signal.SIGTERM)
            status = await asyncio.to_thread(cluster.wait_exit, index, DRAIN_SECONDS + 20)
            exits.append((index, status, round(time.monotonic() - started, 2)))
            left_behind += await asyncio.to_thread(streaming_rows_of_a_stopped_worker, cluster)
            await asyncio.to_thread(cluster.start_worker, index)
            # Back in service once nginx sends it requests again (fail_timeout in the config);
            # then a moment for replies to start on it before the next worker stops.
            await served_by(cluster, index)
            await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), 90)
    finally:
        stop.set()
        for task in clients:
            task.cancel()

    rows = cluster.replies()
    replies = [r for page in pages for r in page.replies]
    acked = {r.reply for r in replies}
    statuses = [rows[r.reply][0] for r in replies if r.reply in rows]
    report = (
        f"rolling restart: exits (worker, status, s from SIGTERM) {exits}; "
        f"{len(replies)} replies: {statuses.count('complete')} complete, "
        f"{statuses.count('interrupted')} interrupted, "
        f"{sum(s not in ('complete', 'interrupted') for s in statuses)} lost or stuck; "
        f"{sum(p.refused for p in pages)} sends refused server_restarting; "
        f"closes {sorted(collections.Counter(c for p in pages for c in p.closes).items())}"
    )
    # No row stays streaming after a clean stop (the reaper did not have to end any).
    assert not left_behind, report
    # Every worker drained and exited by itself within the drain timeout (no crash, no kill).
    assert all(status == 0 for _, status, _ in exits), report + "\n" + cluster.logs()
    assert all(seconds < DRAIN_SECONDS + 10 for _, _, seconds in exits), report
    # No reply lost or stuck: every row made during the restarts is one a client was told about
    # (one per send, however often it was sent again), and it ended.
    assert None not in acked and set(rows) - earlier == acked, report
    assert {rows[r][0] for r in acked} <= {"complete", "interrupted"}, report
    for r in replies:
        status, stored = rows[r.reply]  # type: ignore[index]
        # Stored ⊇ received, and resumed to the end: what the client holds is what is stored.
        assert stored.startswith(r.text) and r.text == stored, (r.client_id, report)
        assert r.finished is not None and r.finished["status"] == status, (r.client_id, report)
    # Sockets were closed with the restart code only (never dropped), and the drain was exercised.
    closes = [code for page in pages for code in page.closes]
    assert closes and set(closes) <= restart_codes(), report
    print(report)


# -- (d) SIGKILL ----------------------------------------------------------------------------------


async def test_sigkill_mid_reply_loses_at_most_one_checkpoint_interval(
    running: Cluster, sim: Any
) -> None:
    cluster = running
    session = await login(cluster, USERS[2])
    full = transcript(KILLED)
    socket = await connect(cluster, session)
    victim = worker_of(cluster, socket)
    reply_id = await start_reply(socket, "killed-1", KILLED)
    text = ""
    while len(text) < 400:  # a few checkpoints in
        frame = await recv(socket)
        if frame["type"] == "delta" and frame.get("reply") == reply_id:
            text = append(text, frame)
    cluster.signal(victim, signal.SIGKILL)
    await asyncio.to_thread(cluster.wait_exit, victim, 10)
    try:  # what was already on its way to the client still counts as received
        while True:
            frame = await recv(socket, 5)
            if frame["type"] == "delta" and frame.get("reply") == reply_id:
                text = append(text, frame)
    except ConnectionClosed:
        pass

    # The page reconnects (nginx: the other worker) and resumes; the reaper ends the reply.
    page = await connect(cluster, session)
    assert worker_of(cluster, page) != victim
    await page.send(json.dumps({"type": "resume", "reply": reply_id, "offset": 0}))
    stored_text, finished = await read_reply(page, reply_id, timeout=3 * LEASE_SECONDS + 5)
    await page.close()
    status, stored = cluster.reply(reply_id)
    assert status == "interrupted" and finished["status"] == "interrupted"
    assert stored_text == stored and finished["length"] == len(stored)
    assert full.startswith(text) and text.startswith(stored)
    # Bounded loss: what the client saw beyond the stored text is at most one checkpoint
    # interval of tokens at the simulator's pace, plus one coalesced delta frame.
    delay_ms = int(re.search(r"delay_ms=(\d+)", KILLED).group(1))  # type: ignore[union-attr]
    bound = math.ceil(CHECKPOINT_MS / delay_ms) + math.ceil(DELTA_COALESCE_MS / delay_ms) + 1
    lost = tokens_between(full, len(stored), len(text))
    assert lost <= bound, (lost, bound, len(stored), len(text))


# -- (e) Redis cut --------------------------------------------------------------------------------


async def test_redis_cut_mid_reply_the_reply_completes_to_its_socket(
    running: Cluster, sim: Any
) -> None:
    cluster = running
    assert cluster.redis_proxy is not None
    session = await login(cluster, USERS[3])
    full = transcript(SLOW)
    socket = await connect(cluster, session)
    reply_id = await start_reply(socket, "redis-cut-1", SLOW)
    text = ""
    while len(text) < 60:
        frame = await recv(socket)
        if frame["type"] == "delta" and frame.get("reply") == reply_id:
            text = append(text, frame)
    cluster.redis_proxy.cut()
    try:
        await asyncio.sleep(0.5)
        text, finished = await read_reply(socket, reply_id, text, timeout=10)
        await asyncio.sleep(1.5)  # the outage outlasts the reply
    finally:
        cluster.redis_proxy.restore()
    assert text == full and finished["status"] == "complete", cluster.logs()
    await socket.close()
    assert cluster.reply(reply_id) == ("complete", full)


# -- (f) PostgreSQL cut as the reply ends ---------------------------------------------------------


async def test_postgres_cut_when_a_reply_ends_stores_what_the_client_received(
    running: Cluster, sim: Any
) -> None:
    cluster = running
    assert cluster.pg_proxy is not None
    session = await login(cluster, USERS[4])
    full = transcript(SLOW)
    socket = await connect(cluster, session)
    reply_id = await start_reply(socket, "pg-cut-1", SLOW)
    text = ""
    while len(text) < len(full) - 60:  # about 12 tokens (0.3 s) before the end
        frame = await recv(socket)
        if frame["type"] == "delta" and frame.get("reply") == reply_id:
            text = append(text, frame)
    cluster.pg_proxy.cut()
    try:
        await asyncio.sleep(2.0)  # the reply ends during the outage: its final write fails
    finally:
        cluster.pg_proxy.restore()
    text, finished = await read_reply(socket, reply_id, text, timeout=3 * LEASE_SECONDS)
    await socket.close()
    status, stored = cluster.reply(reply_id)
    assert stored == text == full, cluster.logs()
    assert status == finished["status"] == "complete"
