"""Run the simulator: in a background thread with its own event loop (tests), or in the foreground.

``Simulator`` is the handle tests hold: its URL and a valid key, the knobs, scripted replies, and
what the server saw (requests, disconnects, generations).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from decimal import Decimal

from aiohttp import web

from .server import create_app
from .state import (
    Disconnect,
    Generation,
    RecordedRequest,
    ScriptedReply,
    SimKey,
    SimulatorConfig,
    SimulatorState,
)

DEFAULT_TEST_KEY = "sk-or-v1-simulator-test-key-0123456789abcdef"


async def start_site(state: SimulatorState, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner and the bound port (``port=0`` picks a free one)."""
    # handler_cancellation: a client that goes away cancels its handler at once, even mid-sleep.
    runner = web.AppRunner(create_app(state), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    server = site._server  # noqa: SLF001 - aiohttp does not expose the bound port otherwise
    bound = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
    return runner, bound


class Simulator:
    """A running local OpenRouter. Thread-safe: script it from any thread."""

    def __init__(
        self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.state = SimulatorState(config)
        self.host = host
        self.port = port
        self.api_key = DEFAULT_TEST_KEY
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Simulator:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                self._runner, self.port = loop.run_until_complete(
                    start_site(self.state, self.host, self.port)
                )
            except BaseException as exc:  # report start-up failures to the caller's thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=serve, name="openrouter-simulator", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        self.state.add_key(self.api_key)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self, config: SimulatorConfig | None = None) -> None:
        """Forget everything (keys, generations, records, scripts) and restore the knobs."""
        self.state.reset()
        if config is not None:
            for name, value in vars(config).items():
                setattr(self.state.config, name, value)
        self.state.add_key(self.api_key)

    # --- addresses and knobs -----------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What a client uses as OpenRouter's base URL."""
        return f"{self.url}/api/v1"

    @property
    def config(self) -> SimulatorConfig:
        return self.state.config

    @property
    def token_delay(self) -> float:
        return self.state.config.token_delay

    @token_delay.setter
    def token_delay(self, seconds: float) -> None:
        self.state.config.token_delay = seconds

    @property
    def first_token_delay(self) -> float:
        return self.state.config.first_token_delay

    @first_token_delay.setter
    def first_token_delay(self, seconds: float) -> None:
        self.state.config.first_token_delay = seconds

    # --- scripting ---------------------------------------------------------------------------
    def next_reply(
        self,
        text: str = "",
        *,
        reasoning: str | None = None,
        pieces: Iterable[str | bytes] | None = None,
        split_characters: bool = False,
    ) -> None:
        """The text (and reasoning) of the next reply; calls queue up, one reply each.

        ``pieces``: the content deltas exactly as given instead of ``text`` cut into tokens;
        bytes go into the chunk's JSON string verbatim (so they may be bytes that are not UTF-8),
        a str is escaped as usual (a lone surrogate as its ``\\u`` escape).
        ``split_characters``: each chunk is written in two parts cut inside its first multi-byte
        character, with a pause between.
        """
        scripted = ScriptedReply(
            text,
            reasoning,
            pieces=None if pieces is None else tuple(pieces),
            split_characters=split_characters,
        )
        with self.state.lock:
            self.state.replies.append(scripted)

    def next_replies(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.next_reply(text)

    def add_key(self, secret: str, credits: Decimal | float | str | None = None) -> SimKey:
        """Accept ``secret``; with ``credits`` it can spend that much (USD), then answers 402."""
        return self.state.add_key(secret, credits)

    def revoke_key(self, secret: str) -> None:
        with self.state.lock:
            key = self.state.keys.get(secret)
            if key is not None:
                key.revoked = True

    def key(self, secret: str) -> SimKey | None:
        return self.state.keys.get(secret)

    # --- what happened -----------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def disconnects(self) -> list[Disconnect]:
        with self.state.lock:
            return list(self.state.disconnects)

    def generation(self, generation_id: str) -> Generation | None:
        return self.state.generations.get(generation_id)

    def wait_for_disconnect(
        self, timeout: float = 1.0, generation_id: str | None = None
    ) -> Disconnect:
        """Block until the server saw a client leave mid-stream; TimeoutError after ``timeout``."""

        def seen() -> Disconnect | None:
            for item in self.state.disconnects:
                if generation_id is None or item.generation_id == generation_id:
                    return item
            return None

        with self.state.changed:
            if not self.state.changed.wait_for(lambda: seen() is not None, timeout):
                raise TimeoutError(f"no client disconnect within {timeout} s")
            found = seen()
            assert found is not None
            return found

    async def await_disconnect(
        self, timeout: float = 1.0, generation_id: str | None = None
    ) -> Disconnect:
        """``wait_for_disconnect`` without blocking the caller's event loop."""
        return await asyncio.to_thread(self.wait_for_disconnect, timeout, generation_id)

    def wait_for_generation_end(self, generation_id: str, timeout: float = 1.0) -> Generation:
        with self.state.changed:
            ok = self.state.changed.wait_for(
                lambda: (
                    (g := self.state.generations.get(generation_id)) is not None
                    and g.ended_at is not None
                ),
                timeout,
            )
            if not ok:
                raise TimeoutError(f"generation {generation_id} did not end within {timeout} s")
            return self.state.generations[generation_id]

    def __repr__(self) -> str:
        return f"<Simulator {self.base_url}>"


def run_forever(config: SimulatorConfig, host: str, port: int, keys: Iterable[str] = ()) -> None:
    """Serve in the foreground until interrupted (the management command)."""
    state = SimulatorState(config)
    for secret in keys:
        state.add_key(secret)

    async def main() -> None:
        runner, bound = await start_site(state, host, port)
        print(f"OpenRouter simulator on http://{host}:{bound}/api/v1", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


__all__ = ["Simulator", "SimulatorConfig", "run_forever", "DEFAULT_TEST_KEY"]
