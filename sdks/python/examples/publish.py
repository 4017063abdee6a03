"""Publishes a few events through a writer with a producer id, so that a
rerun after a crash stores nothing twice.

    python examples/publish.py http://127.0.0.1:7700 "$(cat data/admin.token)"
"""

from __future__ import annotations

import sys

from switchboard import Client, WriterOptions, event


def main(url: str, token: str) -> None:
    with Client(url, token) as client:
        client.create_stream("orders", partitions=4)
        with client.writer("orders", WriterOptions(producer="orders-example")) as writer:
            for i in range(10):
                block = writer.send([event({"order": i * 10 + j}, key=f"customer-{j}") for j in range(10)])
                print("sent block", block)
        print("durable through block", writer.durable_through)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
