"""The load client: C users, one reply each, measured from outside (a process of its own).

    python -m bench.client --mode ws --url http://127.0.0.1:8001 --concurrency 100 \
        --users users.json --group ws-c100 --tokens 200 --result out.json

Modes: ``ws`` (streamchat's websocket protocol; the bare relay speaks the same frames), ``sse``
(``POST /chat/api/stream/`` with the session cookie and CSRF token), ``openai``
(``POST /chat/v1/chat/completions`` with a personal token, ``stream: true``) and ``direct`` (the
same streaming POST straight to the upstream, ``--url`` being its ``.../api/v1``).

It talks to ``bench/run.py`` over stdin/stdout: it warms the server up (``--warmup`` replies, one
after another, not measured), connects every socket (not measured), prints ``READY`` and waits for
``GO`` (``GO <seconds>``: the round's deadline; replies unfinished then are ``cut``); sends (user
``i`` at ``i / C`` of ``--spread`` seconds, or one after another with ``--sequential``), prints
``DONE`` when every reply ended, waits for ``CLOSE`` (the sockets stay open meanwhile), closes them
and writes ``--result``. Per reply: time to first token (send to the first delta), duration (send
to the end), frames, characters and the error if any (an ``error`` frame, a close, no first delta
within ``--first-delta-timeout`` or no end within ``--timeout``, a missing finish, text shorter
than sent). Gaps between delta frames of one reply are pooled into percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

TOKEN_CHARS = 4  # the upstream sends "tok " per token
CONNECT_PARALLEL = 50


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Reply:
    def __init__(self) -> None:
        self.sent = 0.0
        self.first: float | None = None
        self.last: float | None = None
        self.ended: float | None = None
        self.frames = 0
        self.chars = 0
        self.gaps: list[float] = []
        self.error: str | None = None

    def delta(self, text: str) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        else:
            self.gaps.append((now - self.last) * 1000)  # type: ignore[operator]
        self.last = now
        self.frames += 1
        self.chars += len(text)

    def end(self, error: str | None, expected_chars: int) -> None:
        self.ended = time.perf_counter()
        if error is None and self.chars < expected_chars:
            error = f"short_text:{self.chars}/{expected_chars}"
        if error is None and self.first is None:
            error = "no_delta"
        self.error = error

    def record(self) -> dict[str, Any]:
        def ms(t: float | None) -> float | None:
            return None if t is None else round((t - self.sent) * 1000, 3)

        return {
            "ttft_ms": ms(self.first),
            "duration_ms": ms(self.ended),
            "frames": self.frames,
            "chars": self.chars,
            "error": self.error,
        }


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = args.url.rstrip("/")
        host = self.base.split("://", 1)[1]
        self.origin = f"http://{host.split('/', 1)[0]}"
        self.users: list[dict[str, Any]] = []
        if args.users and args.group:
            self.users = json.loads(Path(args.users).read_text())["groups"][args.group]
        self.session: aiohttp.ClientSession | None = None
        self.sockets: list[Any] = []

    def user(self, i: int) -> dict[str, Any]:
        return self.users[i] if self.users else {"session": None, "token": None}

    def total_deadline(self, reply: Reply) -> float:
        """When a reply that has begun times out (event loop time)."""
        return (
            asyncio.get_running_loop().time()
            + self.args.timeout
            - (time.perf_counter() - reply.sent)
        )

    def content(self, tokens: int) -> str:
        return f"bench tokens={tokens}"

    # -- websocket ---------------------------------------------------------------------------

    async def connect(self, i: int) -> Any:
        assert self.session is not None
        headers = {"Origin": self.origin}
        session_key = self.user(i)["session"]
        if session_key:
            headers["Cookie"] = f"sessionid={session_key}"
        url = self.base.replace("http://", "ws://", 1) + "/ws/streamchat/"
        ws = await self.session.ws_connect(
            url,
            headers=headers,
            autoping=True,
            max_msg_size=0,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10),
        )
        msg = await ws.receive(timeout=30)
        if msg.type != aiohttp.WSMsgType.TEXT or orjson.loads(msg.data).get("type") != "hello":
            await ws.close()
            raise RuntimeError(f"no hello: {msg.type} {msg.data!r}"[:200])
        return ws

    async def ws_reply(self, ws: Any, reply: Reply, tokens: int) -> None:
        frame = {
            "type": "send",
            "client_id": secrets.token_hex(8),
            "content": self.content(tokens),
            "conversation": None,
        }
        data = json.dumps(frame)
        reply.sent = time.perf_counter()
        await ws.send_str(data)
        error: str | None = "timeout_first_delta"
        try:
            async with asyncio.timeout(self.args.first_delta_timeout) as limit:
                while True:
                    msg = await ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        error = f"closed:{msg.type.name}:{ws.close_code}"
                        break
                    event = orjson.loads(msg.data)
                    kind = event.get("type")
                    if kind == "delta":
                        if reply.first is None:
                            limit.reschedule(self.total_deadline(reply))
                            error = "timeout_total"
                        reply.delta(event.get("text", ""))
                    elif kind == "reply.finished":
                        status = event.get("status", "complete")
                        error = None if status == "complete" else f"finished:{status}"
                        if event.get("error"):
                            error = f"finished:{event['error'].get('code')}"
                        break
                    elif kind == "error":
                        error = f"error:{event.get('code') or event.get('message')}"
                        break
        except TimeoutError:
            pass
        reply.end(error, tokens * TOKEN_CHARS)

    # -- HTTP streams --------------------------------------------------------------------------

    def http_request(self, i: int, tokens: int) -> tuple[str, dict[str, str], dict[str, Any]]:
        content = self.content(tokens)
        messages = [{"role": "user", "content": content}]
        model = "openai/gpt-4o-mini"
        if self.args.mode == "direct":
            headers = {"Authorization": "Bearer sk-or-v1-bench"}
            body = {"model": model, "messages": messages, "stream": True}
            return self.base + "/chat/completions", headers, body
        if self.args.mode == "openai":
            headers = {"Authorization": f"Bearer {self.user(i)['token']}"}
            body = {"model": model, "messages": messages, "stream": True}
            return self.base + "/chat/v1/chat/completions", headers, body
        csrf = secrets.token_hex(16)  # 32 characters: a CSRF secret Django accepts as it is
        headers = {
            "Cookie": f"sessionid={self.user(i)['session']}; csrftoken={csrf}",
            "X-CSRFToken": csrf,
            "Origin": self.origin,
        }
        body = {"client_id": secrets.token_hex(8), "content": content, "conversation": None}
        return self.base + "/chat/api/stream/", headers, body

    async def http_reply(self, i: int, reply: Reply, tokens: int) -> None:
        assert self.session is not None
        url, headers, body = self.http_request(i, tokens)
        error: str | None = "timeout_first_delta"
        event = ""
        reply.sent = time.perf_counter()
        try:
            async with asyncio.timeout(self.args.first_delta_timeout) as limit:
                async with self.session.post(url, json=body, headers=headers) as response:
                    if response.status != 200:
                        text = (await response.text())[:200]
                        error = f"http_{response.status}:{text}"
                    else:
                        error = "no_finish"
                        async for raw in response.content:
                            line = raw.rstrip(b"\r\n")
                            if line.startswith(b"event:"):
                                event = line[6:].strip().decode()
                                continue
                            if not line.startswith(b"data:"):
                                continue
                            payload = line[5:].strip()
                            if payload == b"[DONE]":
                                error = None
                                break
                            data = orjson.loads(payload)
                            first = reply.first is None
                            if self.args.mode == "sse":
                                done, error = self._sse_event(event, data, reply)
                            else:
                                done, error = self._chunk(data, reply)
                            if first and reply.first is not None:
                                limit.reschedule(self.total_deadline(reply))
                            if done:
                                break
        except TimeoutError:
            error = "timeout_first_delta" if reply.first is None else "timeout_total"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}"
        reply.end(error, tokens * TOKEN_CHARS)

    @staticmethod
    def _sse_event(event: str, data: dict[str, Any], reply: Reply) -> tuple[bool, str | None]:
        if event == "delta":
            reply.delta(data.get("text", ""))
        elif event == "reply.finished":
            if data.get("status") != "complete" or data.get("error"):
                return True, f"finished:{data.get('status')}:{data.get('error')}"
            return True, None
        elif event == "error":
            return True, f"error:{data.get('code')}"
        return False, "no_finish"

    @staticmethod
    def _chunk(data: dict[str, Any], reply: Reply) -> tuple[bool, str | None]:
        if data.get("error"):
            return True, f"error:{data['error']}"[:200]
        choices = data.get("choices") or []
        if choices:
            text = (choices[0].get("delta") or {}).get("content")
            if text:
                reply.delta(text)
        return False, "no_done"

    # -- the round -----------------------------------------------------------------------------

    async def one(self, i: int, reply: Reply, tokens: int, ws: Any = None) -> None:
        if self.args.mode == "ws":
            if ws is None:
                reply.sent = time.perf_counter()
                reply.end("not_connected", tokens * TOKEN_CHARS)
                return
            await self.ws_reply(ws, reply, tokens)
        else:
            await self.http_reply(i, reply, tokens)

    async def warmup(self) -> list[str]:
        problems = []
        for i in range(self.args.warmup):
            ws = await self.connect(i) if self.args.mode == "ws" else None
            reply = Reply()
            await self.one(i, reply, self.args.warmup_tokens, ws)
            if ws is not None:
                await ws.close()
            if reply.error:
                problems.append(reply.error)
        return problems

    async def run(self) -> dict[str, Any]:
        args = self.args
        c = args.concurrency
        offset = args.warmup
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None)
        )
        try:
            warmup_problems = await self.warmup()
            connect_started = time.perf_counter()
            sockets: list[Any] = [None] * c
            connect_errors: list[str] = []
            if args.mode == "ws":
                gate = asyncio.Semaphore(CONNECT_PARALLEL)

                async def connect(k: int) -> None:
                    async with gate:
                        try:
                            sockets[k] = await self.connect(offset + k)
                        except Exception as exc:
                            connect_errors.append(f"{type(exc).__name__}: {exc}"[:200])

                await asyncio.gather(*(connect(k) for k in range(c)))
            connect_s = time.perf_counter() - connect_started
            print("READY", flush=True)
            go = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            # "GO" or "GO <seconds>": the round's deadline (the run's time budget).
            deadline = float(go.split()[1]) if len(go.split()) > 1 else None
            replies = [Reply() for _ in range(c)]
            started = time.perf_counter()

            async def everyone() -> None:
                if args.sequential:
                    for k in range(c):
                        await self.one(offset + k, replies[k], args.tokens, sockets[k])
                    return

                async def later(k: int) -> None:
                    await asyncio.sleep(
                        max(0.0, started + args.spread * k / c - time.perf_counter())
                    )
                    await self.one(offset + k, replies[k], args.tokens, sockets[k])

                await asyncio.gather(*(later(k) for k in range(c)))

            cut = False
            try:
                await asyncio.wait_for(everyone(), deadline)
            except TimeoutError:
                cut = True
                for reply in replies:
                    if reply.ended is None:
                        reply.error = "cut"
            run_s = time.perf_counter() - started
            print("DONE", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            await asyncio.gather(*(ws.close() for ws in sockets if ws is not None))
        finally:
            await self.session.close()
        gaps = [g for reply in replies for g in reply.gaps]
        return {
            "mode": args.mode,
            "concurrency": c,
            "tokens": args.tokens,
            "sequential": args.sequential,
            "cut": cut,
            "replies": [reply.record() for reply in replies],
            "gaps_ms": {
                "count": len(gaps),
                "p50": percentile(gaps, 50),
                "p99": percentile(gaps, 99),
            },
            "connect_errors": connect_errors,
            "warmup_errors": warmup_problems,
            "connect_s": round(connect_s, 3),
            "run_s": round(run_s, 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description="the benchmark's load client")
    parser.add_argument("--mode", choices=["ws", "sse", "openai", "direct"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--users", help="the JSON file bench/setup_db.py wrote")
    parser.add_argument("--group", help="the user group to use (warm-up users first)")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--warmup-tokens", type=int, default=20)
    parser.add_argument("--spread", type=float, default=1.0)
    parser.add_argument("--sequential", action="store_true")
    parser.add_argument(
        "--first-delta-timeout", type=float, default=120.0, help="send to first delta, seconds"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="whole reply, seconds")
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    result = asyncio.run(Client(args).run())
    Path(args.result).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
