import { ApiError, GaveUpError, SwitchboardError } from "./errors.js";

/** Exponential backoff with full jitter: delays from `initialMs` doubling up to `maxMs`, each drawn below its cap, at most `maxAttempts` retries. */
export class Backoff {
  attempts = 0;

  constructor(
    readonly initialMs = 25,
    readonly maxMs = 2000,
    readonly maxAttempts = 30,
  ) {}

  copy(): Backoff {
    return new Backoff(this.initialMs, this.maxMs, this.maxAttempts);
  }

  reset(): void {
    this.attempts = 0;
  }

  /** The next delay (at least `floorMs`), or null when attempts ran out. */
  nextDelay(floorMs = 0): number | null {
    if (this.attempts >= this.maxAttempts) return null;
    const cap = Math.min(this.initialMs * 2 ** Math.min(this.attempts, 16), this.maxMs);
    this.attempts += 1;
    return Math.max(cap * Math.random(), floorMs);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits before the next attempt if `e` can heal; throws otherwise. */
export async function retryOrThrow(backoff: Backoff, e: unknown): Promise<void> {
  if (!(e instanceof SwitchboardError) || !e.retryable) throw e;
  const floor = e instanceof ApiError && e.retryAfterMs !== null ? e.retryAfterMs : 0;
  const delay = backoff.nextDelay(floor);
  if (delay === null) throw new GaveUpError(backoff.attempts, e);
  await sleep(delay);
}
