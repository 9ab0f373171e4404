"""Request/response plumbing over one WebSocket, for the mock servers and the clients.

How this works: venues with a WebSocket order API (Binance WS API, OKX, Deribit)
answer each request with one message that echoes the request's id, possibly out
of request order, and interleave pushes (execution reports, order-channel
updates). `RpcClient` keeps a FIFO of waiting futures per id, so a reused id is
matched to its oldest unanswered request (as venues.md prescribes); anything
without a waiting id goes to the push callback. The receive time recorded for a
reply is taken when the reader task gets the message, not when the caller wakes.

`serve_concurrently` is the server half: each incoming message is handled in its
own task (bounded by MAX_INFLIGHT), so a slow order does not hold back a fast one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from common import TruthRecord
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

MAX_INFLIGHT = 256  # server tasks per connection before the reader waits

Reply = tuple[dict[str, Any], int, int]  # message, monotonic ns, wall ns


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class RpcClient:
    def __init__(self, ws: ClientConnection, reply_id: Callable[[dict[str, Any]], Any],
                 on_push: Callable[[Any], None]) -> None:
        self.ws = ws
        self._reply_id = reply_id
        self._on_push = on_push
        self._waiting: dict[Any, deque[asyncio.Future[Reply]]] = defaultdict(deque)
        self._task = asyncio.create_task(self._read())

    @property
    def local_port(self) -> int:
        return int(self.ws.local_address[1])

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                mono, wall = time.monotonic_ns(), time.time_ns()
                try:
                    msg = json.loads(raw)
                except ValueError:
                    self._on_push(raw)  # e.g. OKX's text "pong"
                    continue
                rid = self._reply_id(msg) if isinstance(msg, dict) else None
                queue = self._waiting.get(rid)
                if queue:
                    queue.popleft().set_result((msg, mono, wall))
                else:
                    self._on_push(msg)
        except ConnectionClosed:
            pass
        for queue in self._waiting.values():
            for fut in queue:
                if not fut.done():
                    fut.set_exception(ConnectionError("websocket closed"))

    async def call(self, rid: Any, message: dict[str, Any], record: TruthRecord | None = None,
                   *, fragments: int = 1) -> dict[str, Any]:
        """Send `message` (optionally as `fragments` frames) and wait for its reply."""
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[rid].append(fut)
        text = dumps(message)
        payload: str | Iterable[str] = text
        if fragments > 1:
            step = -(-len(text) // fragments)
            payload = [text[i:i + step] for i in range(0, len(text), step)]
        if record is not None:
            record.local_port = self.local_port
            record.mark_sent()
        await self.ws.send(payload)
        msg, mono, wall = await fut
        if record is not None:
            record.recv_mono_ns, record.recv_wall_ns = mono, wall
        return msg

    async def close(self) -> None:
        await self.ws.close()
        await self._task


async def serve_concurrently(ws: ServerConnection,
                             handle: Callable[[Any], Awaitable[None]]) -> None:
    """Run `handle(message)` in a task per message until the peer closes."""
    tasks: set[asyncio.Task[None]] = set()
    try:
        async for raw in ws:
            while len(tasks) >= MAX_INFLIGHT:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.create_task(handle(raw))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    except ConnectionClosed:
        pass
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


async def safe_send(ws: ServerConnection, payload: str | Iterable[str]) -> None:
    """Send unless the peer already left (pushes may race the client's close)."""
    with contextlib.suppress(ConnectionClosed):
        await ws.send(payload)
