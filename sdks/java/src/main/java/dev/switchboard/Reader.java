package dev.switchboard;

import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/**
 * Reads a stream batch by batch: {@link #next()}, process, {@link #ack()}.
 *
 * <p>The reader keeps the cursor after the last acked batch. When its session is lost (expired, node gone, server
 * restarted) it allocates a new one from that cursor: a batch not acked comes again, nothing is skipped. While a
 * batch is out, the session's lease is renewed a third of {@code lease_ms} apart, so the application may work on it
 * for long. Not thread-safe: one thread (or one chain of futures) drives a reader.
 */
public final class Reader implements AutoCloseable {
  private final SwitchboardClient client;
  private final String stream;
  private final Options options;
  private String cursor;
  private Session session;
  private Long pending;
  private ScheduledFuture<?> heartbeat;
  private long waitMs;

  /** How a reader reads; null fields are left to the server. */
  public record Options(Integer maxEvents, Long maxBytes, long waitMs, List<Integer> partitions, Backoff backoff) {
    public static Options defaults() {
      return new Options(null, null, 1000, null, Backoff.defaults());
    }

    public Options withMaxEvents(Integer n) {
      return new Options(n, maxBytes, waitMs, partitions, backoff);
    }

    public Options withWaitMs(long ms) {
      return new Options(maxEvents, maxBytes, ms, partitions, backoff);
    }

    public Options withPartitions(List<Integer> p) {
      return new Options(maxEvents, maxBytes, waitMs, p, backoff);
    }
  }

  private Reader(SwitchboardClient client, String stream, String start, Options options) {
    this.client = client;
    this.stream = stream;
    this.cursor = start;
    this.options = options;
    this.waitMs = options.waitMs();
  }

  /**
   * A reader with its session allocated (a bad cursor or a missing stream shows here). {@code start} is
   * {@code earliest}, {@code latest}, {@code at:<RFC 3339 time>} or a saved cursor.
   */
  public static Reader open(SwitchboardClient client, String stream, String start, Options options) {
    Reader r = new Reader(client, stream, start, options == null ? Options.defaults() : options);
    r.allocate();
    return r;
  }

  /** {@link #open} on another thread. */
  public static CompletableFuture<Reader> openAsync(SwitchboardClient client, String stream, String start, Options options) {
    return CompletableFuture.supplyAsync(() -> open(client, stream, start, options), ForkJoinPool.commonPool());
  }

  /** The cursor after the last acked batch: save it to resume. */
  public String cursor() {
    return cursor;
  }

  public Session session() {
    return session;
  }

  /** Changes how long the next reads wait for events. */
  public void setWaitMs(long ms) {
    this.waitMs = ms;
  }

  private void allocate() {
    Backoff b = options.backoff().copy();
    while (true) {
      try {
        SwitchboardClient.Allocated a = client.allocate(stream, "read", cursor, options.partitions(), null);
        stopHeartbeat();
        if (a.cursor() != null) cursor = a.cursor();
        session = a.toSession();
        pending = null;
        return;
      } catch (SwitchboardException e) {
        b.retryOrThrow(e);
      }
    }
  }

  /** The pending batch again if it was not acked, else new events (an empty batch 0 when none came in the wait). */
  public Batch next() {
    Backoff b = options.backoff().copy();
    while (true) {
      Session s = session;
      if (s == null) {
        allocate();
        continue;
      }
      try {
        Batch batch = client.read(s, options.maxEvents(), options.maxBytes(), waitMs);
        if (batch.batch() != 0) {
          pending = batch.batch();
          startHeartbeat(s);
        }
        return batch;
      } catch (SwitchboardException e) {
        if (e.isSessionGone()) {
          lost();
          continue;
        }
        b.retryOrThrow(e);
      }
    }
  }

  /**
   * Acks the pending batch; the new cursor. If the session was lost first, the reader moves to a new one at the
   * previous cursor and the batch comes again (the cursor does not move).
   */
  public String ack() {
    Long batch = pending;
    if (batch == null) return cursor;
    Backoff b = options.backoff().copy();
    while (true) {
      Session s = session;
      if (s == null) {
        pending = null;
        return cursor;
      }
      try {
        String c = client.ack(s, batch);
        stopHeartbeat();
        cursor = c;
        pending = null;
        return cursor;
      } catch (SwitchboardException e) {
        if (e.isSessionGone()) {
          lost();
          return cursor;
        }
        b.retryOrThrow(e);
      }
    }
  }

  /** {@link #next()} on {@code executor}. */
  public CompletableFuture<Batch> nextAsync(Executor executor) {
    return CompletableFuture.supplyAsync(this::next, executor);
  }

  /** {@link #ack()} on {@code executor}. */
  public CompletableFuture<String> ackAsync(Executor executor) {
    return CompletableFuture.supplyAsync(this::ack, executor);
  }

  private void lost() {
    stopHeartbeat();
    session = null;
    pending = null;
  }

  private void startHeartbeat(Session s) {
    if (heartbeat != null) return;
    long every = Math.max(s.leaseMs() / 3, 100);
    // a failed renewal shows at the ack, which handles it
    heartbeat = client.scheduler.scheduleAtFixedRate(
        () -> client.sessionInfoAsync(s).exceptionally(e -> null), every, every, TimeUnit.MILLISECONDS);
  }

  private void stopHeartbeat() {
    if (heartbeat != null) heartbeat.cancel(false);
    heartbeat = null;
  }

  /** Disposes the session (best effort: its lease ends it anyway); the cursor to resume from. */
  public String closeAndGetCursor() {
    stopHeartbeat();
    Session s = session;
    session = null;
    if (s != null) client.disposeQuietly(s);
    return cursor;
  }

  @Override
  public void close() {
    closeAndGetCursor();
  }
}
