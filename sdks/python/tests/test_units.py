from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from switchboard import ApiError, Backoff, GaveUpError, TransportError, sign
from switchboard._http import Pool
from switchboard.retry import retry_or_raise

VECTORS = Path(__file__).resolve().parents[3] / "crates/proto/tests/vectors/signing.json"


def test_signing_matches_the_shared_vectors() -> None:
    cases = json.loads(VECTORS.read_text())["cases"]
    assert cases
    for c in cases:
        assert sign(c["secret"], c["t"], c["method"], c["path"], c["body"].encode()) == c["header"]


def test_backoff_grows_to_its_cap_and_honours_a_floor() -> None:
    b = Backoff(initial=0.01, maximum=0.04, max_attempts=5)
    delays = [b.next_delay() for _ in range(5)]
    assert all(d is not None and 0 <= d <= 0.04 for d in delays)
    assert b.next_delay() is None
    assert (Backoff(initial=0.001, maximum=0.001).next_delay(floor=0.3) or 0) >= 0.3


def test_errors_carry_code_retryable_and_request_id() -> None:
    body = {"error": {"code": "backpressure", "message": "full", "retryable": True, "retry_after_ms": 20}}
    e = ApiError.from_body(429, body, "req-1")
    assert isinstance(e, ApiError)
    assert (e.code, e.retryable, e.request_id, e.retry_after_ms) == ("backpressure", True, "req-1", 20)
    assert "req-1" in str(e)
    gone = ApiError.from_body(410, {"error": {"code": "session_gone", "message": "", "retryable": False, "fenced_by_epoch": 3}}, None)
    assert gone.is_session_gone and gone.is_fenced
    # unavailable heals by waiting even when a server forgets the flag
    assert ApiError(503, "unavailable", "", False).retryable


def test_retries_give_up_with_the_last_error() -> None:
    async def run() -> None:
        b = Backoff(initial=0.001, maximum=0.001, max_attempts=2)
        e = ApiError(503, "unavailable", "draining", True, "r")
        await retry_or_raise(b, e)
        await retry_or_raise(b, e)
        with pytest.raises(GaveUpError) as gave_up:
            await retry_or_raise(b, e)
        assert gave_up.value.code == "unavailable" and gave_up.value.request_id == "r"
        with pytest.raises(ApiError):
            await retry_or_raise(Backoff(), ApiError(409, "conflict", "", False))

    asyncio.run(run())


def test_http_pool_reads_chunked_gzip_and_replaces_a_stale_connection() -> None:
    async def run() -> None:
        served = 0

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            nonlocal served
            await r.readuntil(b"\r\n\r\n")
            served += 1
            body = gzip.compress(json.dumps({"n": served}).encode())
            half = len(body) // 2
            w.write(
                b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n" % half + body[:half] + b"\r\n"
                + b"%x\r\n" % (len(body) - half) + body[half:] + b"\r\n0\r\n\r\n"
            )
            await w.drain()
            # then close: the pooled connection goes stale
            w.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        pool = Pool(f"http://127.0.0.1:{port}")
        first = await pool.request("GET", "/", {}, b"", 5)
        assert json.loads(first.body) == {"n": 1}
        await asyncio.sleep(0.05)
        second = await pool.request("GET", "/", {}, b"", 5)
        assert json.loads(second.body) == {"n": 2}
        srv.close()
        await srv.wait_closed()
        await pool.close()
        with pytest.raises(Exception) as e:
            await Pool(f"http://127.0.0.1:{port}").request("GET", "/", {}, b"", 5)
        assert "connect" in str(e.value)

    asyncio.run(run())


def test_transport_errors_are_retryable() -> None:
    assert TransportError("reset").retryable
