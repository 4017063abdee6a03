package dev.switchboard;

import java.time.Duration;
import java.util.concurrent.ThreadLocalRandom;

/**
 * Exponential backoff with full jitter: delays from {@code initial} doubling up to {@code max}, each drawn uniformly
 * below its cap, for at most {@code maxAttempts} retries; never shorter than a server's {@code retry_after_ms}.
 */
public final class Backoff {
  private final Duration initial;
  private final Duration max;
  private final int maxAttempts;
  private int attempts;

  public Backoff(Duration initial, Duration max, int maxAttempts) {
    this.initial = initial;
    this.max = max;
    this.maxAttempts = maxAttempts;
  }

  /** 25 ms doubling to 2 s, 30 attempts. */
  public static Backoff defaults() {
    return new Backoff(Duration.ofMillis(25), Duration.ofSeconds(2), 30);
  }

  /** A fresh copy (no attempts made). */
  public Backoff copy() {
    return new Backoff(initial, max, maxAttempts);
  }

  public int attempts() {
    return attempts;
  }

  public void reset() {
    attempts = 0;
  }

  /** The next delay in ms (at least {@code floorMs}), or -1 when attempts ran out. */
  public long nextDelayMs(long floorMs) {
    if (attempts >= maxAttempts) return -1;
    long cap = Math.min(initial.toMillis() << Math.min(attempts, 16), max.toMillis());
    attempts++;
    return Math.max((long) (cap * ThreadLocalRandom.current().nextDouble()), floorMs);
  }

  /** Sleeps before the next attempt if {@code e} can heal; throws it (or {@link SwitchboardException.GaveUp}) otherwise. */
  void retryOrThrow(SwitchboardException e) {
    long delay = delayOrThrow(e);
    try {
      Thread.sleep(delay);
    } catch (InterruptedException x) {
      Thread.currentThread().interrupt();
      throw e;
    }
  }

  /** The delay before retrying {@code e}, or throws. */
  long delayOrThrow(SwitchboardException e) {
    if (!e.retryable()) throw e;
    long floor = e instanceof SwitchboardException.Api a && a.retryAfterMs() != null ? a.retryAfterMs() : 0;
    long delay = nextDelayMs(floor);
    if (delay < 0) throw new SwitchboardException.GaveUp(attempts, e);
    return delay;
  }
}
