"""The errors the SDK raises: every one carries ``code``, ``retryable`` and
the ``request_id`` of the answer (when the server answered)."""

from __future__ import annotations

from typing import Any, Optional


class SwitchboardError(Exception):
    """Base of every error this SDK raises."""

    #: The protocol's error code (``bad_cursor``, ``session_gone``, ...);
    #: ``None`` when the server did not answer.
    code: Optional[str] = None
    #: Whether the same call may succeed later.
    retryable: bool = False
    #: The answer's ``X-Request-Id``, to find the call in the server's log.
    request_id: Optional[str] = None
    #: HTTP status of the answer.
    status: Optional[int] = None

    @property
    def is_session_gone(self) -> bool:
        return self.code == "session_gone"

    @property
    def is_fenced(self) -> bool:
        """A writer fenced by a newer session of its producer."""
        return False


class ApiError(SwitchboardError):
    """The server answered with an error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retryable: bool,
        request_id: Optional[str] = None,
        retry_after_ms: Optional[int] = None,
        fenced_by_epoch: Optional[int] = None,
    ) -> None:
        rid = f" [request {request_id}]" if request_id else ""
        super().__init__(f"{code} ({status}): {message}{rid}")
        self.status = status
        self.code = code
        self.message = message
        # unavailable and backpressure heal by waiting whatever the flag says
        self.retryable = retryable or code in ("unavailable", "backpressure")
        self.request_id = request_id
        self.retry_after_ms = retry_after_ms
        self.fenced_by_epoch = fenced_by_epoch

    @property
    def is_fenced(self) -> bool:
        return self.fenced_by_epoch is not None

    @classmethod
    def from_body(cls, status: int, body: Any, request_id: Optional[str]) -> SwitchboardError:
        e = body.get("error") if isinstance(body, dict) else None
        if not isinstance(e, dict) or not isinstance(e.get("code"), str):
            return ProtocolError(f"status {status} without an error body", status, request_id)
        return cls(
            status,
            e["code"],
            str(e.get("message", "")),
            bool(e.get("retryable", False)),
            request_id,
            e.get("retry_after_ms"),
            e.get("fenced_by_epoch"),
        )


class TransportError(SwitchboardError):
    """The call got no answer (refused, reset, timed out): retryable."""

    retryable = True


class ProtocolError(SwitchboardError):
    """The answer was not what the protocol says."""

    def __init__(self, message: str, status: Optional[int] = None, request_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id


class GaveUpError(SwitchboardError):
    """Retries ran out; ``last`` is the last failure."""

    def __init__(self, attempts: int, last: SwitchboardError) -> None:
        super().__init__(f"gave up after {attempts} attempts: {last}")
        self.attempts = attempts
        self.last = last
        self.code = last.code
        self.status = last.status
        self.request_id = last.request_id
        self.retryable = False

    @property
    def is_fenced(self) -> bool:
        return self.last.is_fenced
