"""A TCP forwarder on loopback that a test owns, to put in front of PostgreSQL, Redis or a server
and simulate an outage: ``cut()`` aborts every open connection and refuses new ones (the port
stops listening: clients get "connection refused" at once), ``restore()`` listens again on the
same port. ``cut(refuse=False)`` is the other kind of outage, a network that swallows packets:
new connections are accepted but nothing is forwarded either way until ``restore()`` (clients
wait on their timeouts).

It runs an asyncio loop in a thread of its own, so tests of any kind (sync or async) can use it::

    with TcpProxy(5432) as proxy:          # proxy.port forwards to 127.0.0.1:5432
        ...
        proxy.cut()
        ...
        proxy.restore()

``requests`` keeps the first bytes each client sent (request heads), when ``record=True``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from tests.servers import free_port


class TcpProxy:
    def __init__(
        self, target_port: int, *, target_host: str = "127.0.0.1", record: bool = False
    ) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.record = record
        self.requests: list[bytes] = []
        self.connections = 0  # accepted so far, a test's evidence that traffic went through
        self._transports: set[asyncio.BaseTransport] = set()
        self._held: set[asyncio.StreamWriter] = set()  # accepted while blackholing
        self._server: asyncio.base_events.Server | None = None
        self._blackhole = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"tcp-proxy-{self.port}", daemon=True
        )
        self._thread.start()
        self._call(self._listen())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, coroutine: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._blackhole:
            self._held.add(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        if self._blackhole or self._server is None:  # cut while connecting
            up_writer.transport.abort()
            writer.transport.abort()
            return
        pair = {writer.transport, up_writer.transport}
        self._transports |= pair

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: bool
        ) -> None:
            first = True
            try:
                while data := await source.read(65536):
                    if record and first:
                        self.requests.append(data)
                    first = False
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                # Half-close: the other direction may still carry data (a response after EOF).
                try:
                    if sink.can_write_eof():
                        sink.write_eof()
                    else:
                        sink.close()
                except (ConnectionError, OSError, RuntimeError):
                    pass

        try:
            await asyncio.gather(
                pipe(reader, up_writer, self.record), pipe(up_reader, writer, False)
            )
        finally:
            for transport in pair:
                transport.close()
            self._transports -= pair

    async def _cut(self, refuse: bool) -> None:
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        if refuse:
            if self._server is not None:
                self._server.close()
                self._server = None
            self._blackhole = False
        else:
            await self._listen()
            self._blackhole = True

    async def _restore(self) -> None:
        self._blackhole = False
        for writer in list(self._held):  # what was accepted in the dark never got through
            writer.transport.abort()
        self._held.clear()
        await self._listen()

    def cut(self, *, refuse: bool = True) -> None:
        """Abort every open connection; then refuse new ones (``refuse``) or swallow them."""
        self._call(self._cut(refuse))

    def restore(self) -> None:
        """Forward again, on the same port."""
        self._call(self._restore())

    def stop(self) -> None:
        if not self._loop.is_closed() and self._thread.is_alive():
            self.cut()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
