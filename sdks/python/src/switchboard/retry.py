"""Exponential backoff with full jitter, honouring ``retry_after_ms``."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from .errors import ApiError, GaveUpError, SwitchboardError


@dataclass
class Backoff:
    """Delays from ``initial`` doubling up to ``maximum`` (seconds), each
    drawn uniformly below its cap, for at most ``max_attempts`` retries."""

    initial: float = 0.025
    maximum: float = 2.0
    max_attempts: int = 30
    attempts: int = 0

    def copy(self) -> Backoff:
        return Backoff(self.initial, self.maximum, self.max_attempts)

    def reset(self) -> None:
        self.attempts = 0

    def next_delay(self, floor: float = 0.0) -> float | None:
        if self.attempts >= self.max_attempts:
            return None
        cap = min(self.initial * (1 << min(self.attempts, 16)), self.maximum)
        self.attempts += 1
        return max(cap * random.random(), floor)


async def retry_or_raise(backoff: Backoff, e: SwitchboardError) -> None:
    """Sleeps before the next attempt if ``e`` can heal; raises otherwise."""
    if not e.retryable:
        raise e
    floor = 0.0
    if isinstance(e, ApiError) and e.retry_after_ms is not None:
        floor = e.retry_after_ms / 1000.0
    delay = backoff.next_delay(floor)
    if delay is None:
        raise GaveUpError(backoff.attempts, e) from e
    await asyncio.sleep(delay)
