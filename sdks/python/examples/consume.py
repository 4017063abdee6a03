"""Consumes a stream from a saved cursor (or the beginning), saving the
cursor after each batch, so that a restart resumes where it stopped.

    python examples/consume.py http://127.0.0.1:7700 "$(cat data/admin.token)"
"""

from __future__ import annotations

import asyncio
import pathlib
import sys

from switchboard import AsyncClient, AsyncReader, ReaderOptions

CURSOR = pathlib.Path("orders.cursor")


async def main(url: str, token: str) -> None:
    start = CURSOR.read_text() if CURSOR.exists() else "earliest"
    async with AsyncClient(url, token) as client:
        reader = await AsyncReader.open(client, "orders", start, ReaderOptions(wait_ms=2000))
        seen = 0
        async for batch in reader.batches():
            for gap in batch.gaps:
                print("retention removed offsets", gap["from"], "to", gap["to"] - 1, "of partition", gap["partition"])
            for e in batch.events:
                print(e["partition"], e["offset"], e.get("key"), e.get("value"))
            seen += len(batch.events)
            CURSOR.write_text(batch.cursor)
            if seen >= 100:
                await reader.ack()  # the loop acks a batch only when it asks for the next
                break
        CURSOR.write_text(await reader.close())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
