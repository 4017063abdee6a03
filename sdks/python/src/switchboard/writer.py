"""The client half of ``write -> commit``."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Optional, Sequence

from .client import AsyncClient, Session, encode_events
from .errors import SwitchboardError
from .retry import Backoff, retry_or_raise
from .types import Event

log = logging.getLogger("switchboard")


@dataclass
class WriterOptions:
    """How a writer writes."""

    #: Producer id: exactly-once publishing across lost sessions and restarts.
    producer: Optional[str] = None
    #: Blocks committed but not known durable before :meth:`AsyncWriter.send` waits.
    window: int = 8
    #: Retry policy of each call.
    backoff: Backoff = field(default_factory=Backoff)


@dataclass
class _Kept:
    block: int
    events: bytes
    submitted: bool
    sent: float


class AsyncWriter:
    """Publishes blocks of events through a write session.

    Every block is kept until the server says it is durable; up to
    ``window`` blocks are committed ahead of that. With a ``producer`` id, a
    lost session is replaced and the kept blocks after the new session's
    ``last_block`` are replayed under their numbers, so the server stores
    each event exactly once, across restarts of the server too. Without
    one, kept blocks are sent again under new numbers (at least once).
    ``backpressure`` is honoured: the same call is sent again after
    ``retry_after_ms``.
    """

    def __init__(self, client: AsyncClient, stream: str, options: Optional[WriterOptions] = None) -> None:
        self.client = client
        self.stream = stream
        self.options = options or WriterOptions()
        self._session: Optional[Session] = None
        self._next_block = 1
        self._kept: Deque[_Kept] = deque()
        self._durable_through = 0
        self._latencies: list[float] = []

    @classmethod
    async def open(cls, client: AsyncClient, stream: str, options: Optional[WriterOptions] = None) -> AsyncWriter:
        """A writer with its session allocated."""
        w = cls(client, stream, options)
        await w._allocate()
        return w

    async def __aenter__(self) -> AsyncWriter:
        if self._session is None:
            await self._allocate()
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            await self.close()

    @property
    def durable_through(self) -> int:
        """The highest block known durable together with all before it."""
        return self._durable_through

    @property
    def next_block(self) -> int:
        return self._next_block

    @property
    def pending_blocks(self) -> int:
        """Blocks sent and not yet known durable."""
        return len(self._kept)

    def take_commit_latencies(self) -> list[float]:
        """Seconds from send to durable of each block seen durable since the last call."""
        out, self._latencies = self._latencies, []
        return out

    async def _allocate(self) -> None:
        b = self.options.backoff.copy()
        while True:
            try:
                a = await self.client.allocate(self.stream, "write", producer=self.options.producer)
                break
            except SwitchboardError as e:
                await retry_or_raise(b, e)
        last = a.get("last_block")
        if last is not None:
            # a producer: numbers go on; what is durable is dropped
            while self._kept and self._kept[0].block <= last:
                self._kept.popleft()
            self._durable_through = max(self._durable_through, last)
            if not self._kept:
                self._next_block = max(self._next_block, last + 1)
        else:
            # no producer: a new session numbers from 1
            for i, k in enumerate(self._kept):
                k.block = i + 1
            self._next_block = len(self._kept) + 1
            self._durable_through = 0
        for k in self._kept:
            k.submitted = False
        self._session = Session(a["session"], a["secret"], a.get("lease_ms", 30_000))

    async def send(self, events: Sequence[Event]) -> int:
        """Sends one block (write, then commit without waiting for
        durability), after waiting while ``window`` blocks are not known
        durable; the block's number."""
        return await self.send_encoded(encode_events(events))

    async def send_encoded(self, events_json: bytes) -> int:
        """:meth:`send` with the events' JSON array already encoded."""
        while len(self._kept) >= max(1, self.options.window):
            await self._wait_durable(self._kept[0].block)
        block = self._next_block
        self._next_block += 1
        self._kept.append(_Kept(block, events_json, False, time.monotonic()))
        await self._submit_all()
        return block

    async def _submit_all(self) -> None:
        b = self.options.backoff.copy()
        if self._session is None:
            await self._allocate()
        i = 0
        while i < len(self._kept):
            k = self._kept[i]
            if k.submitted:
                i += 1
                continue
            s = self._session
            if s is None:
                await self._allocate()
                i = 0
                continue
            try:
                await self.client.write(s, k.block, k.events)
                await self.client.commit(s, k.block, durable=False)
            except SwitchboardError as e:
                if e.is_fenced:
                    raise
                if e.is_session_gone:
                    log.info("write session of %s gone; allocating again and replaying", self.stream)
                    self._session = None
                    continue
                if e.code == "conflict" and self.options.producer is not None:
                    # at or below last_block after a race with another
                    # session of this producer: learn where it stands
                    self._session = None
                    continue
                await retry_or_raise(b, e)
                continue
            k.submitted = True
            b.reset()
            i += 1

    async def _wait_durable(self, block: int) -> None:
        b = self.options.backoff.copy()
        while True:
            if not self._kept or self._kept[0].block > block:
                return
            await self._submit_all()
            if not self._kept or self._kept[0].block > block:
                return  # a new session's last_block covered it
            s = self._session
            if s is None:
                continue
            try:
                a = await self.client.commit(s, block, durable=True)
            except SwitchboardError as e:
                if e.is_fenced:
                    raise
                if e.is_session_gone:
                    self._session = None
                    continue
                await retry_or_raise(b, e)
                continue
            if a["status"] == "durable":
                now = time.monotonic()
                while self._kept and self._kept[0].block <= block:
                    self._latencies.append(now - self._kept.popleft().sent)
                self._durable_through = max(self._durable_through, block)
                return

    async def flush(self) -> int:
        """Waits until every block sent is durable; the last block."""
        if self._kept:
            await self._wait_durable(self._kept[-1].block)
        return self._durable_through

    async def close(self) -> int:
        """Flushes, then disposes the session; the last durable block."""
        d = await self.flush()
        s, self._session = self._session, None
        if s is not None:
            await self.client.dispose_quietly(s)
        return d
