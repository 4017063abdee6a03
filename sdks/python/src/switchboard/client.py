"""The asyncio client: one typed method per endpoint of docs/PROTOCOL.md."""

from __future__ import annotations

import gzip
import inspect
import json
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Literal, Mapping, Optional, Sequence, Union
from urllib.parse import quote

from . import _http
from .errors import ApiError, ProtocolError, SwitchboardError, TransportError
from .retry import Backoff, retry_or_raise
from .signing import HEADER, sign
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

#: A bearer token, or a callable (plain or async) giving a fresh one for
#: each call, such as an OAuth2 token manager's.
TokenSource = Union[str, Callable[[], str], Callable[[], Awaitable[str]]]

Compression = Literal["none", "gzip", "zstd"]

#: Bodies smaller than this are sent uncompressed.
COMPRESS_FROM = 1024


@dataclass(frozen=True)
class Session:
    """A session: its id, signing secret and lease."""

    id: str
    secret: str
    lease_ms: int = 30_000

    def __repr__(self) -> str:  # the secret stays out of logs
        return f"Session(id={self.id!r})"


def encode_events(events: Sequence[Event]) -> bytes:
    """The JSON array of a block's events, encoded once so that retries
    send the same bytes."""
    return json.dumps(events, separators=(",", ":"), ensure_ascii=False).encode()


def _name(s: str) -> str:
    return quote(s, safe="")


class AsyncClient:
    """A connection to a Switchboard server.

    ``token`` is a bearer token or a callable returning one per call.
    ``ca_file`` (PEM) is trusted besides the system's roots; ``ssl_context``
    replaces both. ``compression`` compresses request bodies;
    ``accept_compressed`` asks for compressed answers.
    """

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        ca_file: Optional[str] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        compression: Compression = "none",
        accept_compressed: bool = True,
        timeout: float = 60.0,
        max_connections: int = 32,
    ) -> None:
        if compression == "zstd" and not _http.zstd_available():
            raise ValueError("zstd compression needs the zstandard package")
        if compression not in ("none", "gzip", "zstd"):
            raise ValueError(f"unknown compression {compression!r}")
        if ssl_context is None and ca_file is not None:
            ssl_context = ssl.create_default_context()
            ssl_context.load_verify_locations(cafile=ca_file)
        accept = "identity"
        if accept_compressed:
            accept = "gzip, zstd" if _http.zstd_available() else "gzip"
        self._pool = _http.Pool(url, ssl_context, max_idle=max_connections, accept_encoding=accept)
        self._token = token
        self.compression = compression
        self.timeout = timeout

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes idle connections."""
        await self._pool.close()

    async def _bearer(self) -> str:
        t = self._token
        if callable(t):
            v = t()
            if inspect.isawaitable(v):
                v = await v
            t = v
        if not isinstance(t, str):
            raise TypeError("the token callback returned no string")
        return "Bearer " + t.strip()

    def _encode(self, body: bytes) -> tuple[bytes, Optional[str]]:
        if len(body) < COMPRESS_FROM or self.compression == "none":
            return body, None
        if self.compression == "gzip":
            return gzip.compress(body, compresslevel=1), "gzip"
        return _http.zstd_compress(body), "zstd"

    async def request(
        self,
        method: str,
        path: str,
        body: Optional[bytes] = None,
        *,
        session: Optional[Session] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> tuple[int, Any]:
        """Sends one call; the status and the decoded JSON answer, or raises
        the error the server answered with."""
        h = {"Authorization": await self._bearer()}
        data = b""
        if body is not None:
            data, enc = self._encode(body)
            h["Content-Type"] = "application/json"
            if enc:
                h["Content-Encoding"] = enc
        if session is not None:
            h[HEADER] = sign(session.secret, int(time.time() * 1000), method, path, data)
        if headers:
            h.update(headers)
        try:
            resp = await self._pool.request(method, path, h, data, timeout or self.timeout)
        except _http.TransportError as e:
            raise TransportError(str(e)) from e
        rid = resp.headers.get("x-request-id")
        try:
            value = json.loads(resp.body) if resp.body else None
        except ValueError:
            if resp.status >= 400:
                raise ProtocolError(f"status {resp.status} with a body that is not JSON", resp.status, rid) from None
            raise ProtocolError("an answer that is not JSON", resp.status, rid) from None
        if resp.status >= 400:
            raise ApiError.from_body(resp.status, value, rid)
        return resp.status, value

    # streams

    async def create_stream(
        self,
        name: str,
        *,
        partitions: Optional[int] = None,
        retention_ms: Optional[int] = None,
        retention_bytes: Optional[int] = None,
        encrypt_keys: Optional[bool] = None,
    ) -> tuple[StreamInfo, bool]:
        """``POST /v1/streams``; the stream, and whether it was created (not
        already there with the same settings)."""
        req: dict[str, Any] = {"name": name}
        for k, v in (
            ("partitions", partitions),
            ("retention_ms", retention_ms),
            ("retention_bytes", retention_bytes),
            ("encrypt_keys", encrypt_keys),
        ):
            if v is not None:
                req[k] = v
        status, s = await self.request("POST", "/v1/streams", json.dumps(req).encode())
        return s, status == 201

    async def list_streams(self) -> list[StreamInfo]:
        """``GET /v1/streams``."""
        _, v = await self.request("GET", "/v1/streams")
        return list(v["streams"])

    async def describe_stream(self, name: str) -> StreamDescription:
        """``GET /v1/streams/{name}``."""
        _, v = await self.request("GET", f"/v1/streams/{_name(name)}")
        d: StreamDescription = v
        return d

    async def delete_stream(self, name: str) -> None:
        """``DELETE /v1/streams/{name}``."""
        await self.request("DELETE", f"/v1/streams/{_name(name)}")

    async def publish(
        self,
        stream: str,
        events: Sequence[Event],
        *,
        idempotency_key: Optional[str] = None,
        backoff: Optional[Backoff] = None,
    ) -> PublishAnswer:
        """``POST /v1/streams/{name}/events``, answered once durable.

        Safe to repeat: without an ``idempotency_key`` one is generated, and
        transport failures and retryable errors are retried under it
        (honouring ``retry_after_ms``), so each event is stored once even
        when an answer is lost."""
        key = idempotency_key or os.urandom(16).hex()
        body = b"".join((b'{"events":', encode_events(events), b"}"))
        b = (backoff or Backoff()).copy()
        path = f"/v1/streams/{_name(stream)}/events"
        while True:
            try:
                _, v = await self.request("POST", path, body, headers={"Idempotency-Key": key})
                a: PublishAnswer = v
                return a
            except SwitchboardError as e:
                await retry_or_raise(b, e)

    # sessions

    async def allocate(
        self,
        stream: str,
        mode: Literal["read", "write"],
        *,
        cursor: Optional[str] = None,
        partitions: Optional[Sequence[int]] = None,
        producer: Optional[str] = None,
    ) -> Allocated:
        """``POST /v1/sessions``."""
        req: dict[str, Any] = {"stream": stream, "mode": mode}
        if cursor is not None:
            req["cursor"] = cursor
        if partitions is not None:
            req["partitions"] = list(partitions)
        if producer is not None:
            req["producer"] = producer
        _, v = await self.request("POST", "/v1/sessions", json.dumps(req).encode())
        a: Allocated = v
        return a

    async def _on(self, method: str, s: Session, op: str, body: Optional[bytes] = None, timeout: Optional[float] = None) -> Any:
        _, v = await self.request(method, f"/v1/sessions/{_name(s.id)}{op}", body, session=s, timeout=timeout)
        return v

    async def session_info(self, s: Session) -> SessionInfo:
        """``GET /v1/sessions/{id}``: the heartbeat."""
        v: SessionInfo = await self._on("GET", s, "")
        return v

    async def read(
        self,
        s: Session,
        *,
        max_events: Optional[int] = None,
        max_bytes: Optional[int] = None,
        wait_ms: Optional[int] = None,
    ) -> ReadAnswer:
        """``POST /v1/sessions/{id}/read``."""
        req: dict[str, int] = {}
        if max_events is not None:
            req["max_events"] = max_events
        if max_bytes is not None:
            req["max_bytes"] = max_bytes
        if wait_ms is not None:
            req["wait_ms"] = wait_ms
        timeout = self.timeout + (wait_ms or 0) / 1000.0
        v: ReadAnswer = await self._on("POST", s, "/read", json.dumps(req).encode(), timeout)
        return v

    async def ack(self, s: Session, batch: int) -> AckAnswer:
        """``POST /v1/sessions/{id}/ack``."""
        v: AckAnswer = await self._on("POST", s, "/ack", b'{"batch":%d}' % batch)
        return v

    async def write(self, s: Session, block: int, events: Union[Sequence[Event], bytes]) -> WriteAnswer:
        """``POST /v1/sessions/{id}/write``; ``events`` may be pre-encoded
        (:func:`encode_events`)."""
        data = events if isinstance(events, bytes) else encode_events(events)
        body = b"".join((b'{"block":%d,"events":' % block, data, b"}"))
        v: WriteAnswer = await self._on("POST", s, "/write", body)
        return v

    async def commit(self, s: Session, block: int, durable: bool = False) -> CommitAnswer:
        """``POST /v1/sessions/{id}/commit``."""
        body = b'{"block":%d,"durable":%s}' % (block, b"true" if durable else b"false")
        v: CommitAnswer = await self._on("POST", s, "/commit", body)
        return v

    async def dispose(self, s: Session) -> Any:
        """``DELETE /v1/sessions/{id}``."""
        return await self._on("DELETE", s, "")

    async def ready(self) -> bool:
        """``GET /readyz``: whether the node serves (false while it drains,
        while its store is out of reach, or, on an API node, while no
        backend serves)."""
        try:
            resp = await self._pool.request("GET", "/readyz", {}, b"", self.timeout)
        except _http.TransportError as e:
            raise TransportError(str(e)) from e
        if resp.status not in (200, 503):
            raise ProtocolError(f"/readyz answered {resp.status}", resp.status, resp.headers.get("x-request-id"))
        return resp.status == 200

    async def openapi(self) -> dict[str, Any]:
        """``GET /v1/openapi.json``: the contract as OpenAPI 3.1."""
        _, v = await self.request("GET", "/v1/openapi.json")
        d: dict[str, Any] = v
        return d

    async def dispose_quietly(self, s: Session) -> None:
        """Disposes a session, best effort: its lease ends it anyway."""
        try:
            await self.dispose(s)
        except SwitchboardError:
            pass

    async def config(self) -> dict[str, Any]:
        """``GET /v1/config``: the node's effective configuration, secrets
        redacted (needs ``switchboard:admin``)."""
        _, v = await self.request("GET", "/v1/config")
        c: dict[str, Any] = v
        return c

    async def cluster(self) -> ClusterInfo:
        """``GET /v1/cluster``."""
        _, v = await self.request("GET", "/v1/cluster")
        c: ClusterInfo = v
        return c


__all__ = ["AsyncClient", "Session", "TokenSource", "Compression", "encode_events", "ApiError"]
