/** The client half of `read -> ack`. */

import { Client, Session } from "./client.js";
import { SwitchboardError } from "./errors.js";
import { Backoff, retryOrThrow } from "./retry.js";
import type { Gap, ReadEvent } from "./types.js";

/** One read answer. `batch` is 0 when nothing came within the wait (nothing to ack then). `gaps` lists offsets that retention removed before they could be read: the stream goes on after them. */
export interface Batch {
  batch: number;
  events: ReadEvent[];
  cursor: string;
  gaps: Gap[];
}

export interface ReaderOptions {
  /** Events per batch (server default 500). */
  maxEvents?: number;
  /** Bytes per batch (server default 1 MiB). */
  maxBytes?: number;
  /** Long-poll wait of each read, ms (default 1000). */
  waitMs?: number;
  /** Only these partitions. */
  partitions?: number[];
  /** Retry policy of each call. */
  backoff?: Backoff;
}

/**
 * Reads a stream batch by batch: {@link Reader.next}, process, {@link Reader.ack}.
 *
 * The reader keeps the cursor after the last acked batch. When its session is lost (expired, node gone, server
 * restarted) it allocates a new one from that cursor: a batch not acked comes again, nothing is skipped. While a
 * batch is out, a timer renews the session's lease a third of `lease_ms` apart, so the application may work on it
 * for long.
 */
export class Reader {
  #cursor: string;
  #session: Session | null = null;
  #pending: number | null = null;
  #heartbeat: ReturnType<typeof setTimeout> | null = null;
  waitMs: number;
  readonly backoff: Backoff;

  private constructor(
    readonly client: Client,
    readonly stream: string,
    start: string,
    readonly options: ReaderOptions,
  ) {
    this.#cursor = start;
    this.waitMs = options.waitMs ?? 1000;
    this.backoff = options.backoff ?? new Backoff();
  }

  /** A reader with its session allocated (a bad cursor or a missing stream shows here). `start` is `earliest`, `latest`, `at:<RFC 3339 time>` or a saved cursor. */
  static async open(client: Client, stream: string, start = "latest", options: ReaderOptions = {}): Promise<Reader> {
    const r = new Reader(client, stream, start, options);
    await r.#allocate();
    return r;
  }

  /** The cursor after the last acked batch: save it to resume. */
  get cursor(): string {
    return this.#cursor;
  }

  get session(): Session | null {
    return this.#session;
  }

  async #allocate(): Promise<void> {
    const b = this.backoff.copy();
    for (;;) {
      try {
        const opts: { cursor: string; partitions?: number[] } = { cursor: this.#cursor };
        if (this.options.partitions) opts.partitions = this.options.partitions;
        const a = await this.client.allocate(this.stream, "read", opts);
        this.#stopHeartbeat();
        if (a.cursor !== undefined) this.#cursor = a.cursor;
        this.#session = Session.of(a);
        this.#pending = null;
        return;
      } catch (e) {
        await retryOrThrow(b, e);
      }
    }
  }

  /** The pending batch again if it was not acked, else new events (an empty batch 0 when none came within `waitMs`). */
  async next(): Promise<Batch> {
    const b = this.backoff.copy();
    for (;;) {
      const s = this.#session;
      if (s === null) {
        await this.#allocate();
        continue;
      }
      try {
        const req: { max_events?: number; max_bytes?: number; wait_ms: number } = { wait_ms: this.waitMs };
        if (this.options.maxEvents !== undefined) req.max_events = this.options.maxEvents;
        if (this.options.maxBytes !== undefined) req.max_bytes = this.options.maxBytes;
        const a = await this.client.read(s, req);
        if (a.batch !== 0) {
          this.#pending = a.batch;
          this.#startHeartbeat(s);
        }
        return { batch: a.batch, events: a.events, cursor: a.cursor, gaps: a.gaps ?? [] };
      } catch (e) {
        if (e instanceof SwitchboardError && e.isSessionGone) {
          this.#lost();
          continue;
        }
        await retryOrThrow(b, e);
      }
    }
  }

  /** Acks the pending batch; the new cursor. If the session was lost first, the reader moves to a new one at the previous cursor and the batch comes again (the cursor does not move). */
  async ack(): Promise<string> {
    const batch = this.#pending;
    if (batch === null) return this.#cursor;
    const b = this.backoff.copy();
    for (;;) {
      const s = this.#session;
      if (s === null) {
        this.#pending = null;
        return this.#cursor;
      }
      try {
        const a = await this.client.ack(s, batch);
        this.#stopHeartbeat();
        this.#cursor = a.cursor;
        this.#pending = null;
        return this.#cursor;
      } catch (e) {
        if (e instanceof SwitchboardError && e.isSessionGone) {
          this.#lost();
          return this.#cursor;
        }
        await retryOrThrow(b, e);
      }
    }
  }

  /** Batches with events (or gaps) as they come; each is acked when the loop asks for the next one, after its body ran. */
  async *batches(): AsyncGenerator<Batch, void, undefined> {
    for (;;) {
      const b = await this.next();
      if (b.batch === 0) continue;
      yield b;
      await this.ack();
    }
  }

  #lost(): void {
    this.#stopHeartbeat();
    this.#session = null;
    this.#pending = null;
  }

  #startHeartbeat(s: Session): void {
    if (this.#heartbeat !== null) return;
    const every = Math.max(s.leaseMs / 3, 100);
    const beat = (): void => {
      this.client.sessionInfo(s).then(
        () => {
          if (this.#heartbeat !== null) this.#heartbeat = schedule();
        },
        (e: unknown) => {
          // a failed renewal shows at the ack, which handles it
          const gone = e instanceof SwitchboardError && e.isSessionGone;
          if (this.#heartbeat !== null && !gone) this.#heartbeat = schedule();
        },
      );
    };
    const schedule = (): ReturnType<typeof setTimeout> => {
      const t = setTimeout(beat, every);
      // a renewal alone never keeps a process alive
      (t as { unref?: () => void }).unref?.();
      return t;
    };
    this.#heartbeat = schedule();
  }

  #stopHeartbeat(): void {
    if (this.#heartbeat !== null) clearTimeout(this.#heartbeat);
    this.#heartbeat = null;
  }

  /** Disposes the session (best effort: its lease ends it anyway); the cursor to resume from. */
  async close(): Promise<string> {
    this.#stopHeartbeat();
    const s = this.#session;
    this.#session = null;
    if (s !== null) await this.client.disposeQuietly(s);
    return this.#cursor;
  }
}
