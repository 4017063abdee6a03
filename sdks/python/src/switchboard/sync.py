"""The synchronous API: the asyncio client run on a private event loop in
a background thread, so it works from any thread, inside or outside an
application's own event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine, Iterator, Literal, Optional, Sequence, TypeVar

from .client import AsyncClient, Compression, Session, TokenSource
from .reader import AsyncReader, Batch, ReaderOptions
from .types import (
    AckAnswer,
    Allocated,
    ClusterInfo,
    CommitAnswer,
    Event,
    PublishAnswer,
    ReadAnswer,
    SessionInfo,
    StreamDescription,
    StreamInfo,
    WriteAnswer,
)
from .writer import AsyncWriter, WriterOptions

T = TypeVar("T")


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="switchboard-io", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return

        async def cancel_the_rest() -> None:
            # such as the lease renewal of a reader left with a batch out
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class Client:
    """The blocking twin of :class:`AsyncClient` (same arguments)."""

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        ca_file: Optional[str] = None,
        compression: Compression = "none",
        accept_compressed: bool = True,
        timeout: float = 60.0,
        max_connections: int = 32,
    ) -> None:
        self._loop = _Loop()
        self.aio = AsyncClient(
            url,
            token,
            ca_file=ca_file,
            compression=compression,
            accept_compressed=accept_compressed,
            timeout=timeout,
            max_connections=max_connections,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.loop.is_closed():
            coro.close()
            raise RuntimeError("this switchboard Client is closed")
        return self._loop.run(coro)

    def close(self) -> None:
        """Closes connections and stops the client's thread."""
        if not self._loop.loop.is_closed():
            self._run(self.aio.close())
        self._loop.stop()

    def create_stream(
        self,
        name: str,
        *,
        partitions: Optional[int] = None,
        retention_ms: Optional[int] = None,
        retention_bytes: Optional[int] = None,
        encrypt_keys: Optional[bool] = None,
    ) -> tuple[StreamInfo, bool]:
        return self._run(
            self.aio.create_stream(
                name,
                partitions=partitions,
                retention_ms=retention_ms,
                retention_bytes=retention_bytes,
                encrypt_keys=encrypt_keys,
            )
        )

    def list_streams(self) -> list[StreamInfo]:
        return self._run(self.aio.list_streams())

    def describe_stream(self, name: str) -> StreamDescription:
        return self._run(self.aio.describe_stream(name))

    def delete_stream(self, name: str) -> None:
        self._run(self.aio.delete_stream(name))

    def publish(self, stream: str, events: Sequence[Event], *, idempotency_key: Optional[str] = None) -> PublishAnswer:
        return self._run(self.aio.publish(stream, events, idempotency_key=idempotency_key))

    def allocate(
        self,
        stream: str,
        mode: Literal["read", "write"],
        *,
        cursor: Optional[str] = None,
        partitions: Optional[Sequence[int]] = None,
        producer: Optional[str] = None,
    ) -> Allocated:
        return self._run(self.aio.allocate(stream, mode, cursor=cursor, partitions=partitions, producer=producer))

    def session_info(self, s: Session) -> SessionInfo:
        return self._run(self.aio.session_info(s))

    def read(
        self, s: Session, *, max_events: Optional[int] = None, max_bytes: Optional[int] = None, wait_ms: Optional[int] = None
    ) -> ReadAnswer:
        return self._run(self.aio.read(s, max_events=max_events, max_bytes=max_bytes, wait_ms=wait_ms))

    def ack(self, s: Session, batch: int) -> AckAnswer:
        return self._run(self.aio.ack(s, batch))

    def write(self, s: Session, block: int, events: Sequence[Event]) -> WriteAnswer:
        return self._run(self.aio.write(s, block, events))

    def commit(self, s: Session, block: int, durable: bool = False) -> CommitAnswer:
        return self._run(self.aio.commit(s, block, durable))

    def dispose(self, s: Session) -> Any:
        return self._run(self.aio.dispose(s))

    def ready(self) -> bool:
        return self._run(self.aio.ready())

    def openapi(self) -> dict[str, Any]:
        return self._run(self.aio.openapi())

    def config(self) -> dict[str, Any]:
        return self._run(self.aio.config())

    def cluster(self) -> ClusterInfo:
        return self._run(self.aio.cluster())

    def reader(self, stream: str, start: str = "latest", options: Optional[ReaderOptions] = None) -> Reader:
        """Opens a :class:`Reader` (see :class:`AsyncReader`)."""
        return Reader(self, self._run(AsyncReader.open(self.aio, stream, start, options)))

    def writer(self, stream: str, options: Optional[WriterOptions] = None) -> Writer:
        """Opens a :class:`Writer` (see :class:`AsyncWriter`)."""
        return Writer(self, self._run(AsyncWriter.open(self.aio, stream, options)))


class Reader:
    """The blocking twin of :class:`AsyncReader`."""

    def __init__(self, client: Client, aio: AsyncReader) -> None:
        self._c = client
        self.aio = aio

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def cursor(self) -> str:
        return self.aio.cursor

    def next(self) -> Batch:
        return self._c._run(self.aio.next())

    def ack(self) -> str:
        return self._c._run(self.aio.ack())

    def batches(self) -> Iterator[Batch]:
        """Batches as they come, each acked when the loop asks for the next."""
        while True:
            b = self.next()
            if b.batch == 0:
                continue
            yield b
            self.ack()

    def close(self) -> str:
        return self._c._run(self.aio.close())


class Writer:
    """The blocking twin of :class:`AsyncWriter`."""

    def __init__(self, client: Client, aio: AsyncWriter) -> None:
        self._c = client
        self.aio = aio

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()

    @property
    def durable_through(self) -> int:
        return self.aio.durable_through

    def send(self, events: Sequence[Event]) -> int:
        return self._c._run(self.aio.send(events))

    def flush(self) -> int:
        return self._c._run(self.aio.flush())

    def close(self) -> int:
        return self._c._run(self.aio.close())
