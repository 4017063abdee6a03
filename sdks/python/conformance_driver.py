"""The conformance driver of the Python SDK: commands in, results out, one
JSON line each (conformance/README.md)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, Optional, cast

sys.path.insert(0, __file__.rsplit("/", 1)[0] + "/src")

from switchboard import (  # noqa: E402
    AsyncClient,
    AsyncReader,
    AsyncWriter,
    Compression,
    ReaderOptions,
    SwitchboardError,
    WriterOptions,
    __version__,
    sign,
)


class Fail(Exception):
    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code


def error_value(e: BaseException) -> dict[str, Any]:
    if isinstance(e, SwitchboardError):
        return {
            "code": e.code,
            "status": e.status,
            "retryable": e.retryable,
            "request_id": e.request_id,
            "message": str(e),
        }
    code = e.code if isinstance(e, Fail) else None
    return {"code": code, "retryable": False, "message": f"{type(e).__name__}: {e}"}


class Driver:
    def __init__(self) -> None:
        self.client: Optional[AsyncClient] = None
        self.writers: dict[str, AsyncWriter] = {}
        self.readers: dict[str, AsyncReader] = {}

    def c(self) -> AsyncClient:
        if self.client is None:
            raise Fail("connect first")
        return self.client

    async def handle(self, cmd: str, a: dict[str, Any]) -> dict[str, Any]:
        if cmd == "hello":
            return {"sdk": "python", "version": __version__}
        if cmd == "connect":
            comp = a.get("compression") or "none"
            if comp not in ("none", "gzip", "zstd"):
                raise Fail(f"unknown compression {comp}", "unsupported")
            token: str = a["token"]
            try:
                self.client = AsyncClient(
                    a["url"],
                    (lambda: token) if a.get("token_callback") else token,
                    ca_file=a.get("ca_file"),
                    compression=cast(Compression, comp),
                )
            except ValueError as e:
                raise Fail(str(e), "unsupported" if comp == "zstd" else None) from e
            return {}
        if cmd == "sign":
            return {"header": sign(a["secret"], a["t"], a["method"], a["path"], a["body"].encode())}
        if cmd == "create_stream":
            _, created = await self.c().create_stream(
                a["name"], partitions=a.get("partitions"), retention_bytes=a.get("retention_bytes")
            )
            return {"created": created}
        if cmd == "publish":
            ans = await self.c().publish(a["stream"], a["events"])
            return {"offsets": ans["offsets"]}
        if cmd == "writer_open":
            opts = WriterOptions(producer=a.get("producer"), window=a.get("window", 8))
            self.writers[a["writer"]] = await AsyncWriter.open(self.c(), a["stream"], opts)
            return {}
        if cmd == "writer_send":
            return {"block": await self.writers[a["writer"]].send(a["events"])}
        if cmd == "writer_flush":
            return {"durable_through": await self.writers[a["writer"]].flush()}
        if cmd == "writer_close":
            return {"durable_through": await self.writers.pop(a["writer"]).close()}
        if cmd == "reader_open":
            ropts = ReaderOptions(max_events=a.get("max_events"))
            self.readers[a["reader"]] = await AsyncReader.open(self.c(), a["stream"], a["from"], ropts)
            return {}
        if cmd == "reader_read":
            return await self.read(self.readers[a["reader"]], a)
        if cmd == "reader_cursor":
            return {"cursor": self.readers[a["reader"]].cursor}
        if cmd == "reader_close":
            return {"cursor": await self.readers.pop(a["reader"]).close()}
        if cmd == "bench":
            return await bench(a)
        raise Fail(f"unknown command {cmd}", "unsupported")

    async def read(self, r: AsyncReader, a: dict[str, Any]) -> dict[str, Any]:
        """Batches until ``count`` events or ``timeout_ms``; each held
        ``hold_ms`` before its ack; a batch whose ack did not move the
        cursor (session lost) comes again and is not counted."""
        count = a.get("count", 1)
        deadline = time.monotonic() + a.get("timeout_ms", 10_000) / 1000
        hold = a.get("hold_ms", 0) / 1000
        events: list[Any] = []
        gaps: list[Any] = []
        redelivered = 0
        while len(events) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r.options.wait_ms = int(min(left, 1.0) * 1000)
            b = await r.next()
            if b.batch == 0:
                continue
            await asyncio.sleep(hold)
            before = r.cursor
            if await r.ack() == before:
                redelivered += 1
                continue
            events.extend(b.events)
            gaps.extend(b.gaps)
        return {"events": events, "gaps": gaps, "redelivered": redelivered, "cursor": r.cursor}


async def bench(a: dict[str, Any]) -> dict[str, Any]:
    """Publishes ``events`` events of about ``size`` bytes in blocks of
    ``block`` through a writer, then consumes them through a reader."""
    total, block, size = a["events"], a.get("block", 500), a.get("size", 1024)
    pad = "x" * max(size - 40, 0)
    async with AsyncClient(a["url"], a["token"], accept_compressed=False) as c:
        await c.create_stream(a["stream"], partitions=4)
        started = time.monotonic()
        w = await AsyncWriter.open(c, a["stream"])
        sent = 0
        while sent < total:
            n = min(block, total - sent)
            await w.send([{"key": f"k{i % 64}", "value": {"i": i, "pad": pad}} for i in range(sent, sent + n)])
            sent += n
        await w.close()
        publish = total / (time.monotonic() - started)
        started = time.monotonic()
        r = await AsyncReader.open(c, a["stream"], "earliest", ReaderOptions(max_events=block))
        got = 0
        while got < total:
            b = await r.next()
            got += len(b.events)
            await r.ack()
        consume = total / (time.monotonic() - started)
        await r.close()
    return {"publish_events_per_s": publish, "consume_events_per_s": consume}


async def main() -> None:
    d = Driver()
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        a: dict[str, Any] = {}
        try:
            parsed = json.loads(line)
            if not isinstance(parsed, dict):
                raise Fail("a command is a JSON object")
            a = parsed
            answer: dict[str, Any] = {"ok": True, **(await d.handle(a.get("cmd", ""), a))}
        except Exception as e:  # every failure is an answer, not a crash
            answer = {"ok": False, "error": error_value(e)}
        answer["id"] = a.get("id")
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
