"""The protocol's JSON shapes, as typed dictionaries."""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional

if sys.version_info >= (3, 11):
    from typing import NotRequired, TypedDict
else:  # pragma: no cover - older Pythons
    from typing_extensions import NotRequired, TypedDict


class Event(TypedDict, total=False):
    """An event as written: ``value`` (any JSON) or ``value_b64`` (bytes,
    standard base64), never both."""

    key: str
    headers: Dict[str, str]
    value: Any
    value_b64: str


class ReadEvent(TypedDict):
    """An event as read: the written fields, and where it is."""

    partition: int
    offset: int
    timestamp: str
    key: NotRequired[str]
    headers: NotRequired[Dict[str, str]]
    value: NotRequired[Any]
    value_b64: NotRequired[str]


#: Offsets ``from`` to ``to - 1`` of ``partition`` were removed by
#: retention before they could be read.
Gap = TypedDict("Gap", {"partition": int, "from": int, "to": int})


class ReadAnswer(TypedDict):
    batch: int
    events: List[ReadEvent]
    cursor: str
    gaps: NotRequired[List[Gap]]


class AckAnswer(TypedDict):
    batch: int
    cursor: str


class WriteAnswer(TypedDict):
    block: int
    events: int


class OffsetRange(TypedDict):
    partition: int
    first: int
    last: int


class CommitAnswer(TypedDict):
    block: int
    status: str
    offsets: NotRequired[List[OffsetRange]]


class Allocated(TypedDict):
    session: str
    secret: str
    mode: str
    stream: str
    lease_ms: int
    node: str
    cursor: NotRequired[str]
    last_block: NotRequired[int]


class SessionInfo(TypedDict, total=False):
    mode: str
    stream: str
    cursor: str
    pending_batch: int
    last_block: int
    durable_through_block: int
    blocks_in_flight: int
    lease_ms: int


class StreamInfo(TypedDict, total=False):
    name: str
    partitions: int
    retention_ms: Optional[int]
    retention_bytes: Optional[int]
    encrypt_keys: bool


class StreamDescription(StreamInfo, total=False):
    start_offsets: List[int]
    end_offsets: List[int]


class PublishedOffset(TypedDict):
    partition: int
    offset: int


class PublishAnswer(TypedDict):
    offsets: List[PublishedOffset]


ClusterInfo = Dict[str, Any]
