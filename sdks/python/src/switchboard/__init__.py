"""Python SDK for Switchboard.

- :class:`AsyncClient` / :class:`Client`: one typed method per endpoint of
  the protocol; session calls are signed with the session's secret.
- :class:`AsyncReader` / :class:`Reader`: the client half of
  ``read -> ack``: retries with backoff, re-allocates from the last acked
  cursor when the session is lost, renews the lease while a batch is out,
  and reports gaps.
- :class:`AsyncWriter` / :class:`Writer`: the client half of
  ``write -> commit``: numbers blocks, pipelines commits up to a window,
  honours ``backpressure``, and with a producer id replays the blocks
  after ``last_block`` into a new session, so each event lands once.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Mapping, Optional

from .client import AsyncClient, Compression, Session, TokenSource, encode_events
from .errors import ApiError, GaveUpError, ProtocolError, SwitchboardError, TransportError
from .reader import AsyncReader, Batch, ReaderOptions
from .retry import Backoff
from .signing import sign
from .sync import Client, Reader, Writer
from .types import Event, Gap, ReadEvent
from .writer import AsyncWriter, WriterOptions

__version__ = "0.1.0"


def event(value: Any, *, key: Optional[str] = None, headers: Optional[Mapping[str, str]] = None) -> Event:
    """An event whose value is ``value`` (any JSON)."""
    e: Event = {"value": value}
    if key is not None:
        e["key"] = key
    if headers:
        e["headers"] = dict(headers)
    return e


def binary_event(data: bytes, *, key: Optional[str] = None, headers: Optional[Mapping[str, str]] = None) -> Event:
    """An event whose value is ``data`` (bytes)."""
    e: Event = {"value_b64": base64.b64encode(data).decode()}
    if key is not None:
        e["key"] = key
    if headers:
        e["headers"] = dict(headers)
    return e


def event_bytes(e: ReadEvent) -> bytes:
    """An event's value as bytes: decoded base64, or the JSON text."""
    if "value_b64" in e:
        return base64.b64decode(e["value_b64"])
    return json.dumps(e.get("value"), separators=(",", ":")).encode()

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncReader",
    "AsyncWriter",
    "Backoff",
    "Batch",
    "Client",
    "Compression",
    "Event",
    "Gap",
    "GaveUpError",
    "ProtocolError",
    "ReadEvent",
    "ReaderOptions",
    "Reader",
    "Session",
    "SwitchboardError",
    "TokenSource",
    "TransportError",
    "Writer",
    "WriterOptions",
    "binary_event",
    "encode_events",
    "event",
    "event_bytes",
    "sign",
]
