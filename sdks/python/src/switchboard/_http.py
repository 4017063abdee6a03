"""A small HTTP/1.1 client on asyncio streams: keep-alive connections in a
pool, TLS through the standard ``ssl`` module, bodies by length or
chunked, gzip (and zstd when the ``zstandard`` package is installed)
answers decoded. The SDK needs nothing beyond the standard library."""

from __future__ import annotations

import asyncio
import importlib
import ssl
import zlib
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit

_zstd: Any
try:  # optional: zstd bodies
    _zstd = importlib.import_module("zstandard")
except ImportError:  # pragma: no cover - depends on the environment
    _zstd = None

MAX_HEAD = 64 * 1024


class TransportError(Exception):
    """The request got no usable answer (refused, reset, timed out)."""


def zstd_available() -> bool:
    """Whether zstd bodies can be sent and read."""
    return _zstd is not None


def zstd_compress(data: bytes) -> bytes:
    if _zstd is None:
        raise RuntimeError("zstd needs the zstandard package")
    return bytes(_zstd.ZstdCompressor(level=1).compress(data))


def _decode(body: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "zstd" and _zstd is not None:
        return bytes(_zstd.ZstdDecompressor().decompressobj().decompress(body))
    raise TransportError(f"answer in an encoding this client cannot read: {encoding}")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # pragma: no cover - closing a broken socket
            pass


@dataclass
class Pool:
    """Keep-alive connections to one origin."""

    url: str
    ssl_context: Optional[ssl.SSLContext] = None
    max_idle: int = 32
    accept_encoding: str = "gzip"
    connect_timeout: float = 5.0
    _idle: list[_Conn] = field(default_factory=list)

    def __post_init__(self) -> None:
        u = urlsplit(self.url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {self.url!r}")
        self.host = u.hostname
        self.tls = u.scheme == "https"
        self.port = u.port or (443 if self.tls else 80)
        self.authority = u.netloc
        self.base_path = u.path.rstrip("/")
        if self.tls and self.ssl_context is None:
            self.ssl_context = ssl.create_default_context()

    async def _connect(self) -> _Conn:
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.ssl_context if self.tls else None,
                    server_hostname=self.host if self.tls else None,
                    limit=MAX_HEAD * 4,
                ),
                self.connect_timeout,
            )
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
            raise TransportError(f"cannot connect to {self.authority}: {e}") from e
        return _Conn(r, w)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        timeout: float,
    ) -> Response:
        """One exchange; a pooled connection the server closed meanwhile is
        replaced once, transparently."""
        for attempt in (0, 1):
            reused = bool(self._idle)
            conn = self._idle.pop() if reused else await self._connect()
            try:
                resp, keep = await asyncio.wait_for(
                    self._exchange(conn, method, path, headers, body), timeout
                )
            except _Stale:
                conn.close()
                if reused and attempt == 0:
                    continue
                raise TransportError("the connection closed before an answer") from None
            except asyncio.TimeoutError:
                conn.close()
                raise TransportError(f"no answer within {timeout:.0f} s") from None
            except (OSError, asyncio.IncompleteReadError, ssl.SSLError, ValueError) as e:
                conn.close()
                raise TransportError(f"connection failed: {e}") from e
            if keep and len(self._idle) < self.max_idle:
                self._idle.append(conn)
            else:
                conn.close()
            return resp
        raise TransportError("unreachable")  # pragma: no cover

    async def _exchange(
        self,
        conn: _Conn,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[Response, bool]:
        lines = [f"{method} {self.base_path}{path} HTTP/1.1", f"Host: {self.authority}"]
        lines.append(f"Accept-Encoding: {self.accept_encoding}")
        for k, v in headers.items():
            lines.append(f"{k}: {v}")
        lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        w = conn.writer
        try:
            if len(body) < 16 * 1024:
                w.write(head + body)
            else:
                w.write(head)
                w.write(body)
            await w.drain()
            raw = await conn.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as e:
            if isinstance(e, asyncio.IncompleteReadError) and e.partial:
                raise
            raise _Stale() from e
        status_line, *header_lines = raw.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
        status = int(parts[1])
        hs: dict[str, str] = {}
        for line in header_lines:
            if not line:
                continue
            k, _, v = line.partition(":")
            hs[k.strip().lower()] = v.strip()
        keep = hs.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
        r = conn.reader
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            data = b""
        elif "chunked" in hs.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size_line = await r.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # trailers end with an empty line
                    while (await r.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    break
                chunks.append(await r.readexactly(size))
                await r.readexactly(2)
            data = b"".join(chunks)
        elif "content-length" in hs:
            data = await r.readexactly(int(hs["content-length"]))
        else:
            data = await r.read()
            keep = False
        data = _decode(data, hs.get("content-encoding", "").lower())
        return Response(status, hs, data), keep


class _Stale(Exception):
    """A pooled connection was closed by the server before this request."""
