"""The client half of ``read -> ack``."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import AsyncIterator, List, Optional, Sequence

from .client import AsyncClient, Session
from .errors import SwitchboardError
from .retry import Backoff, retry_or_raise
from .types import Gap, ReadEvent

log = logging.getLogger("switchboard")


@dataclass
class ReaderOptions:
    """How a reader reads; ``None`` leaves a limit to the server."""

    #: Events per batch (server default 500).
    max_events: Optional[int] = None
    #: Bytes per batch (server default 1 MiB).
    max_bytes: Optional[int] = None
    #: Long-poll wait of each read, ms.
    wait_ms: int = 1000
    #: Only these partitions.
    partitions: Optional[Sequence[int]] = None
    #: Retry policy of each call.
    backoff: Backoff = field(default_factory=Backoff)


@dataclass
class Batch:
    """One read answer. ``batch`` is 0 when nothing came within the wait
    (nothing to ack then). ``gaps`` lists offsets that retention removed
    before they could be read: the stream goes on after them."""

    batch: int
    events: List[ReadEvent]
    cursor: str
    gaps: List[Gap] = field(default_factory=list)


class AsyncReader:
    """Reads a stream batch by batch: :meth:`next`, process, :meth:`ack`.

    The reader keeps the cursor after the last acked batch. When its session
    is lost (expired, node gone, server restarted) it allocates a new one
    from that cursor: a batch not acked comes again, nothing is skipped.
    While a batch is out, a task renews the session's lease a third of
    ``lease_ms`` apart, so the application may work on it for long.
    """

    def __init__(
        self, client: AsyncClient, stream: str, start: str = "latest", options: Optional[ReaderOptions] = None
    ) -> None:
        self.client = client
        self.stream = stream
        self._cursor = start
        #: This reader's own copy; changing ``wait_ms`` or ``max_events``
        #: applies to the next reads.
        self.options = dataclasses.replace(options) if options is not None else ReaderOptions()
        self._session: Optional[Session] = None
        self._pending: Optional[int] = None
        self._heartbeat: Optional[asyncio.Task[None]] = None

    @classmethod
    async def open(
        cls, client: AsyncClient, stream: str, start: str = "latest", options: Optional[ReaderOptions] = None
    ) -> AsyncReader:
        """A reader with its session allocated (errors such as a bad cursor
        or a missing stream show here). ``start`` is ``earliest``,
        ``latest``, ``at:<RFC 3339 time>`` or a saved cursor."""
        r = cls(client, stream, start, options)
        await r._allocate()
        return r

    async def __aenter__(self) -> AsyncReader:
        if self._session is None:
            await self._allocate()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def cursor(self) -> str:
        """The cursor after the last acked batch: save it to resume."""
        return self._cursor

    @property
    def session(self) -> Optional[Session]:
        return self._session

    async def _allocate(self) -> None:
        b = self.options.backoff.copy()
        while True:
            try:
                o = self.options
                a = await self.client.allocate(self.stream, "read", cursor=self._cursor, partitions=o.partitions)
            except SwitchboardError as e:
                await retry_or_raise(b, e)
                continue
            self._stop_heartbeat()
            if "cursor" in a:
                self._cursor = a["cursor"]
            self._session = Session(a["session"], a["secret"], a.get("lease_ms", 30_000))
            self._pending = None
            return

    async def next(self) -> Batch:
        """The pending batch again if it was not acked, else new events (an
        empty batch 0 when none came within ``wait_ms``)."""
        b = self.options.backoff.copy()
        while True:
            s = self._session
            if s is None:
                await self._allocate()
                continue
            try:
                o = self.options
                a = await self.client.read(s, max_events=o.max_events, max_bytes=o.max_bytes, wait_ms=o.wait_ms)
            except SwitchboardError as e:
                if e.is_session_gone:
                    log.info("read session of %s gone; allocating again from the cursor", self.stream)
                    self._lost()
                    continue
                await retry_or_raise(b, e)
                continue
            if a["batch"] != 0:
                self._pending = a["batch"]
                self._start_heartbeat(s)
            return Batch(a["batch"], a["events"], a["cursor"], a.get("gaps", []))

    async def ack(self) -> str:
        """Acks the pending batch; the new cursor. If the session was lost
        first, the reader moves to a new one at the previous cursor and the
        batch comes again (the cursor does not move)."""
        batch = self._pending
        if batch is None:
            return self._cursor
        b = self.options.backoff.copy()
        while True:
            s = self._session
            if s is None:
                self._pending = None
                return self._cursor
            try:
                a = await self.client.ack(s, batch)
            except SwitchboardError as e:
                if e.is_session_gone:
                    self._lost()
                    return self._cursor
                await retry_or_raise(b, e)
                continue
            self._stop_heartbeat()
            self._cursor = a["cursor"]
            self._pending = None
            return self._cursor

    async def batches(self) -> AsyncIterator[Batch]:
        """Batches with events (or gaps) as they come; each is acked when
        the loop asks for the next one, that is after its body ran::

            async for batch in reader.batches():
                handle(batch.events)
        """
        while True:
            b = await self.next()
            if b.batch == 0:
                continue
            yield b
            await self.ack()

    def _lost(self) -> None:
        self._stop_heartbeat()
        self._session = None
        self._pending = None

    def _start_heartbeat(self, s: Session) -> None:
        if self._heartbeat is not None:
            return
        every = max(s.lease_ms / 3000.0, 0.1)

        async def beat() -> None:
            while True:
                await asyncio.sleep(every)
                try:
                    await self.client.session_info(s)
                except SwitchboardError as e:
                    # a failed renewal shows at the ack, which handles it
                    if e.is_session_gone:
                        return

        self._heartbeat = asyncio.get_running_loop().create_task(beat())

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    async def close(self) -> str:
        """Disposes the session (best effort: its lease ends it anyway);
        the cursor to resume from."""
        self._stop_heartbeat()
        s, self._session = self._session, None
        if s is not None:
            await self.client.dispose_quietly(s)
        return self._cursor
