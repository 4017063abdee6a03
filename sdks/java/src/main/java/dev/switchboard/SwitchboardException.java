package dev.switchboard;

/**
 * Base of every error the SDK throws. Each carries the protocol's {@link #code()} ({@code bad_cursor},
 * {@code session_gone}, ...; null when the server did not answer), whether the same call may succeed later
 * ({@link #retryable()}), and the answer's {@link #requestId()} to find the call in the server's log.
 */
public class SwitchboardException extends RuntimeException {
  private static final long serialVersionUID = 1L;
  private final String code;
  private final boolean retryable;
  private final String requestId;
  private final int status;

  SwitchboardException(String message, String code, boolean retryable, String requestId, int status, Throwable cause) {
    super(message, cause);
    this.code = code;
    this.retryable = retryable;
    this.requestId = requestId;
    this.status = status;
  }

  /** The protocol's error code, or null when the server did not answer. */
  public String code() {
    return code;
  }

  /** Whether the same call may succeed later. */
  public boolean retryable() {
    return retryable;
  }

  /** The answer's {@code X-Request-Id}, or null. */
  public String requestId() {
    return requestId;
  }

  /** HTTP status of the answer, 0 when there was none. */
  public int status() {
    return status;
  }

  /** The session is gone: allocate a new one. */
  public boolean isSessionGone() {
    return "session_gone".equals(code);
  }

  /** A writer fenced by a newer session of its producer. */
  public boolean isFenced() {
    return false;
  }

  /** The server answered with an error body. */
  public static final class Api extends SwitchboardException {
  private static final long serialVersionUID = 1L;
    private final Long retryAfterMs;
    private final Long fencedByEpoch;

    Api(int status, String code, String message, boolean retryable, String requestId, Long retryAfterMs, Long fencedByEpoch) {
      super(code + " (" + status + "): " + message + (requestId != null ? " [request " + requestId + "]" : ""),
          code,
          // unavailable and backpressure heal by waiting, whatever the flag says
          retryable || "unavailable".equals(code) || "backpressure".equals(code),
          requestId, status, null);
      this.retryAfterMs = retryAfterMs;
      this.fencedByEpoch = fencedByEpoch;
    }

    /** With {@code backpressure}: wait this long before the same call. */
    public Long retryAfterMs() {
      return retryAfterMs;
    }

    /** With a fenced writer's {@code session_gone}: the epoch of the producer's newer session. */
    public Long fencedByEpoch() {
      return fencedByEpoch;
    }

    @Override
    public boolean isFenced() {
      return fencedByEpoch != null;
    }
  }

  /** The call got no answer (refused, reset, timed out): retryable. */
  public static final class Transport extends SwitchboardException {
  private static final long serialVersionUID = 1L;
    Transport(String message, Throwable cause) {
      super(message, null, true, null, 0, cause);
    }
  }

  /** The answer was not what the protocol says. */
  public static final class Protocol extends SwitchboardException {
  private static final long serialVersionUID = 1L;
    Protocol(String message, int status, String requestId) {
      super(message, null, false, requestId, status, null);
    }
  }

  /** Retries ran out; {@link #last()} is the last failure. */
  public static final class GaveUp extends SwitchboardException {
  private static final long serialVersionUID = 1L;
    private final int attempts;
    private final SwitchboardException last;

    GaveUp(int attempts, SwitchboardException last) {
      super("gave up after " + attempts + " attempts: " + last.getMessage(), last.code(), false, last.requestId(), last.status(), last);
      this.attempts = attempts;
      this.last = last;
    }

    public int attempts() {
      return attempts;
    }

    public SwitchboardException last() {
      return last;
    }

    @Override
    public boolean isFenced() {
      return last.isFenced();
    }
  }
}
