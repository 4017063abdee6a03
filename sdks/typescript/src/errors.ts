/** The errors the SDK throws: each carries `code`, `retryable` and the answer's `requestId`. */
export class SwitchboardError extends Error {
  /** The protocol's error code (`bad_cursor`, `session_gone`, ...); null when the server did not answer. */
  code: string | null = null;
  /** Whether the same call may succeed later. */
  retryable = false;
  /** The answer's `X-Request-Id`, to find the call in the server's log. */
  requestId: string | null = null;
  /** HTTP status of the answer. */
  status: number | null = null;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }

  get isSessionGone(): boolean {
    return this.code === "session_gone";
  }

  /** A writer fenced by a newer session of its producer. */
  get isFenced(): boolean {
    return false;
  }
}

/** The server answered with an error body. */
export class ApiError extends SwitchboardError {
  readonly retryAfterMs: number | null;
  readonly fencedByEpoch: number | null;

  constructor(
    status: number,
    code: string,
    message: string,
    retryable: boolean,
    requestId: string | null,
    retryAfterMs: number | null = null,
    fencedByEpoch: number | null = null,
  ) {
    super(`${code} (${status}): ${message}${requestId ? ` [request ${requestId}]` : ""}`);
    this.status = status;
    this.code = code;
    // unavailable and backpressure heal by waiting, whatever the flag says
    this.retryable = retryable || code === "unavailable" || code === "backpressure";
    this.requestId = requestId;
    this.retryAfterMs = retryAfterMs;
    this.fencedByEpoch = fencedByEpoch;
  }

  override get isFenced(): boolean {
    return this.fencedByEpoch !== null;
  }

  static fromBody(status: number, body: unknown, requestId: string | null): SwitchboardError {
    const e = (body as { error?: Record<string, unknown> } | null)?.error;
    if (!e || typeof e.code !== "string") {
      const p = new ProtocolError(`status ${status} without an error body`);
      p.status = status;
      p.requestId = requestId;
      return p;
    }
    return new ApiError(
      status,
      e.code,
      String(e.message ?? ""),
      e.retryable === true,
      requestId,
      typeof e.retry_after_ms === "number" ? e.retry_after_ms : null,
      typeof e.fenced_by_epoch === "number" ? e.fenced_by_epoch : null,
    );
  }
}

/** The call got no answer (refused, reset, timed out): retryable. */
export class TransportError extends SwitchboardError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.retryable = true;
  }
}

/** The answer was not what the protocol says. */
export class ProtocolError extends SwitchboardError {}

/** Retries ran out; `last` is the last failure. */
export class GaveUpError extends SwitchboardError {
  constructor(
    readonly attempts: number,
    readonly last: SwitchboardError,
  ) {
    super(`gave up after ${attempts} attempts: ${last.message}`, { cause: last });
    this.code = last.code;
    this.status = last.status;
    this.requestId = last.requestId;
  }

  override get isFenced(): boolean {
    return this.last.isFenced;
  }
}
