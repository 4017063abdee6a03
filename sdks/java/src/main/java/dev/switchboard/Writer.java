package dev.switchboard;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;

/**
 * Publishes blocks of events through a write session.
 *
 * <p>Every block is kept until the server says it is durable; up to {@code window} blocks are committed ahead of
 * that. With a producer id, a lost session is replaced and the kept blocks after the new session's
 * {@code last_block} are replayed under their numbers, so the server stores each event exactly once, across restarts
 * of the server too. Without one, kept blocks are sent again under new numbers (at least once). {@code backpressure}
 * is honoured: the same call comes again after {@code retry_after_ms}. Not thread-safe.
 */
public final class Writer implements AutoCloseable {
  private final SwitchboardClient client;
  private final String stream;
  private final Options options;
  private Session session;
  private long nextBlock = 1;
  private final Deque<Kept> kept = new ArrayDeque<>();
  private long durableThrough;
  private final List<Long> latenciesNs = new ArrayList<>();

  /** How a writer writes. */
  public record Options(String producer, int window, Backoff backoff) {
    public static Options defaults() {
      return new Options(null, 8, Backoff.defaults());
    }

    /** Exactly-once publishing as {@code producer}. */
    public Options withProducer(String producer) {
      return new Options(producer, window, backoff);
    }

    /** Blocks committed but not known durable before {@link Writer#send} waits. */
    public Options withWindow(int window) {
      return new Options(producer, window, backoff);
    }
  }

  private static final class Kept {
    long block;
    final byte[] events;
    boolean submitted;
    final long sentNs;

    Kept(long block, byte[] events) {
      this.block = block;
      this.events = events;
      this.sentNs = System.nanoTime();
    }
  }

  private Writer(SwitchboardClient client, String stream, Options options) {
    this.client = client;
    this.stream = stream;
    this.options = options;
  }

  /** A writer with its session allocated. */
  public static Writer open(SwitchboardClient client, String stream, Options options) {
    Writer w = new Writer(client, stream, options == null ? Options.defaults() : options);
    w.allocate();
    return w;
  }

  /** The highest block known durable together with all before it. */
  public long durableThrough() {
    return durableThrough;
  }

  public long nextBlock() {
    return nextBlock;
  }

  /** Blocks sent and not yet known durable. */
  public int pendingBlocks() {
    return kept.size();
  }

  /** Nanoseconds from send to durable of each block seen durable since the last call. */
  public List<Long> takeCommitLatenciesNs() {
    List<Long> out = new ArrayList<>(latenciesNs);
    latenciesNs.clear();
    return out;
  }

  private void allocate() {
    Backoff b = options.backoff().copy();
    SwitchboardClient.Allocated a;
    while (true) {
      try {
        a = client.allocate(stream, "write", null, null, options.producer());
        break;
      } catch (SwitchboardException e) {
        b.retryOrThrow(e);
      }
    }
    if (a.lastBlock() != null) {
      // a producer: numbers go on; what is durable is dropped
      long last = a.lastBlock();
      while (!kept.isEmpty() && kept.peekFirst().block <= last) kept.pollFirst();
      durableThrough = Math.max(durableThrough, last);
      if (kept.isEmpty()) nextBlock = Math.max(nextBlock, last + 1);
    } else {
      // no producer: a new session numbers from 1
      long n = 1;
      for (Kept k : kept) k.block = n++;
      nextBlock = n;
      durableThrough = 0;
    }
    for (Kept k : kept) k.submitted = false;
    session = a.toSession();
  }

  /**
   * Sends one block (write, then commit without waiting for durability), after waiting while {@code window} blocks
   * are not known durable; the block's number.
   */
  public long send(List<Event> events) {
    return sendEncoded(Event.encode(events));
  }

  /** {@link #send} with the events' JSON array already encoded ({@link Event#encode}). */
  public long sendEncoded(byte[] eventsJson) {
    while (kept.size() >= Math.max(1, options.window())) waitDurable(kept.peekFirst().block);
    long block = nextBlock++;
    kept.addLast(new Kept(block, eventsJson));
    submitAll();
    return block;
  }

  /** {@link #send} on {@code executor}. */
  public CompletableFuture<Long> sendAsync(List<Event> events, Executor executor) {
    return CompletableFuture.supplyAsync(() -> send(events), executor);
  }

  private void submitAll() {
    Backoff b = options.backoff().copy();
    if (session == null) allocate();
    boolean restart = true;
    while (restart) {
      restart = false;
      Iterator<Kept> it = kept.iterator();
      while (it.hasNext()) {
        Kept k = it.next();
        if (k.submitted) continue;
        if (session == null) {
          allocate();
          restart = true;
          break;
        }
        try {
          client.write(session, k.block, k.events);
          client.commit(session, k.block, false);
          k.submitted = true;
          b.reset();
        } catch (SwitchboardException e) {
          if (e.isFenced()) throw e;
          if (e.isSessionGone() || ("conflict".equals(e.code()) && options.producer() != null)) {
            // gone, or at or below last_block after a race with another session of this producer
            session = null;
          } else {
            b.retryOrThrow(e);
          }
          restart = true;
          break;
        }
      }
    }
  }

  private boolean covered(long block) {
    return kept.isEmpty() || kept.peekFirst().block > block;
  }

  private void waitDurable(long block) {
    Backoff b = options.backoff().copy();
    while (true) {
      if (covered(block)) return;
      submitAll();
      if (covered(block)) return; // a new session's last_block covered it
      Session s = session;
      if (s == null) continue;
      try {
        if (client.commit(s, block, true).durable()) {
          long now = System.nanoTime();
          while (!kept.isEmpty() && kept.peekFirst().block <= block) latenciesNs.add(now - kept.pollFirst().sentNs);
          durableThrough = Math.max(durableThrough, block);
          return;
        }
      } catch (SwitchboardException e) {
        if (e.isFenced()) throw e;
        if (e.isSessionGone()) {
          session = null;
          continue;
        }
        b.retryOrThrow(e);
      }
    }
  }

  /** Waits until every block sent is durable; the last durable block. */
  public long flush() {
    if (!kept.isEmpty()) waitDurable(kept.peekLast().block);
    return durableThrough;
  }

  /** {@link #flush} on {@code executor}. */
  public CompletableFuture<Long> flushAsync(Executor executor) {
    return CompletableFuture.supplyAsync(this::flush, executor);
  }

  /** Flushes, then disposes the session; the last durable block. */
  public long closeAndFlush() {
    long d = flush();
    Session s = session;
    session = null;
    if (s != null) client.disposeQuietly(s);
    return d;
  }

  @Override
  public void close() {
    closeAndFlush();
  }
}
