"""Against a real server (SWITCHBOARD_BIN)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from switchboard import (
    ApiError,
    AsyncClient,
    AsyncReader,
    AsyncWriter,
    Client,
    ReaderOptions,
    WriterOptions,
    binary_event,
    event,
    event_bytes,
)

from .conftest import TOKEN


def name() -> str:
    return "py-" + uuid.uuid4().hex[:12]


def test_sync_publish_write_and_consume(server: str) -> None:
    s = name()
    with Client(server, lambda: TOKEN, compression="gzip") as c:
        info, created = c.create_stream(s, partitions=2)
        assert created and info["partitions"] == 2
        assert c.create_stream(s, partitions=2)[1] is False
        c.publish(s, [event({"i": -1}, key="a", headers={"h": "1"}), binary_event(b"\x00\xff", key="b")])
        with c.writer(s, WriterOptions(producer="p1")) as w:
            for b in range(3):
                w.send([event({"i": b * 10 + j}, key=f"k{j}") for j in range(10)])
        assert w.durable_through == 3
        got = []
        with c.reader(s, "earliest", ReaderOptions(max_events=7)) as r:
            for batch in r.batches():
                got.extend(batch.events)
                if len(got) >= 32:
                    break
        assert len(got) == 32
        assert event_bytes(next(e for e in got if e.get("key") == "b")) == b"\x00\xff"
        assert next(e for e in got if e.get("key") == "a")["headers"] == {"h": "1"}
        # a second writer of the producer goes on after block 3
        with c.writer(s, WriterOptions(producer="p1")) as w2:
            assert w2.send([event(1)]) == 4


def test_async_reader_resumes_and_reports_errors(server: str) -> None:
    async def run() -> None:
        s = name()
        async with AsyncClient(server, TOKEN) as c:
            await c.create_stream(s)
            await c.publish(s, [event(i) for i in range(20)])
            r = await AsyncReader.open(c, s, "earliest", ReaderOptions(max_events=5))
            b = await r.next()
            assert [e["value"] for e in b.events] == [0, 1, 2, 3, 4]
            again = await r.next()
            assert again.batch == b.batch, "an unacked batch comes again"
            cursor = await r.ack()
            await r.close()
            r2 = await AsyncReader.open(c, s, cursor, ReaderOptions(max_events=100, wait_ms=0))
            assert [e["value"] for e in (await r2.next()).events] == list(range(5, 20))
            await r2.close()
            with pytest.raises(ApiError) as e:
                await AsyncReader.open(c, s, cursor[:-3] + "AAA")
            assert e.value.code == "bad_cursor" and not e.value.retryable and e.value.request_id
            with pytest.raises(ApiError) as e:
                await AsyncWriter.open(c, name())
            assert e.value.code == "stream_not_found"

    asyncio.run(run())


def test_a_batch_held_past_the_lease_is_still_acked(server: str) -> None:
    async def run() -> None:
        s = name()
        async with AsyncClient(server, TOKEN) as c:
            await c.create_stream(s)
            await c.publish(s, [event(i) for i in range(3)])
            r = await AsyncReader.open(c, s, "earliest")
            b = await r.next()
            session = r.session
            await asyncio.sleep(3.5)  # the lease is 2 s
            before = r.cursor
            assert await r.ack() != before
            assert r.session == session
            await r.close()
            assert b.events

    asyncio.run(run())


def test_sync_client_works_inside_a_running_event_loop(server: str) -> None:
    async def run() -> None:
        with Client(server, TOKEN) as c:
            assert isinstance(c.list_streams(), list)
            assert "session" in c.config()
            assert c.ready() is True
            assert c.openapi()["openapi"].startswith("3.1")
        with pytest.raises(RuntimeError, match="closed"):
            c.list_streams()

    t = time.monotonic()
    asyncio.run(run())
    assert time.monotonic() - t < 10
