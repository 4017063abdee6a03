/** The client half of `write -> commit`. */

import { Client, Session, encodeEvents } from "./client.js";
import { SwitchboardError } from "./errors.js";
import { Backoff, retryOrThrow } from "./retry.js";
import type { Event } from "./types.js";

export interface WriterOptions {
  /** Producer id: exactly-once publishing across lost sessions and restarts. */
  producer?: string;
  /** Blocks committed but not known durable before `send` waits (default 8). */
  window?: number;
  /** Retry policy of each call. */
  backoff?: Backoff;
}

interface Kept {
  block: number;
  events: Uint8Array;
  submitted: boolean;
  sent: number;
}

/**
 * Publishes blocks of events through a write session.
 *
 * Every block is kept until the server says it is durable; up to `window` blocks are committed ahead of that.
 * With a `producer` id, a lost session is replaced and the kept blocks after the new session's `last_block` are
 * replayed under their numbers, so the server stores each event exactly once. Without one, kept blocks are sent
 * again under new numbers (at least once). `backpressure` is honoured: the same call comes again after
 * `retry_after_ms`.
 */
export class Writer {
  #session: Session | null = null;
  #nextBlock = 1;
  #kept: Kept[] = [];
  #durableThrough = 0;
  readonly window: number;
  readonly backoff: Backoff;
  /** Ms from send to durable of each block seen durable since the last {@link Writer.takeCommitLatencies}. */
  #latencies: number[] = [];

  private constructor(
    readonly client: Client,
    readonly stream: string,
    readonly producer: string | undefined,
    options: WriterOptions,
  ) {
    this.window = Math.max(1, options.window ?? 8);
    this.backoff = options.backoff ?? new Backoff();
  }

  /** A writer with its session allocated. */
  static async open(client: Client, stream: string, options: WriterOptions = {}): Promise<Writer> {
    const w = new Writer(client, stream, options.producer, options);
    await w.#allocate();
    return w;
  }

  /** The highest block known durable together with all before it. */
  get durableThrough(): number {
    return this.#durableThrough;
  }

  get nextBlock(): number {
    return this.#nextBlock;
  }

  /** Blocks sent and not yet known durable. */
  get pendingBlocks(): number {
    return this.#kept.length;
  }

  takeCommitLatencies(): number[] {
    const out = this.#latencies;
    this.#latencies = [];
    return out;
  }

  async #allocate(): Promise<void> {
    const b = this.backoff.copy();
    for (;;) {
      try {
        const opts: { producer?: string } = {};
        if (this.producer !== undefined) opts.producer = this.producer;
        const a = await this.client.allocate(this.stream, "write", opts);
        if (a.last_block !== undefined) {
          // a producer: numbers go on; what is durable is dropped
          const last = a.last_block;
          while (this.#kept.length > 0 && (this.#kept[0] as Kept).block <= last) this.#kept.shift();
          this.#durableThrough = Math.max(this.#durableThrough, last);
          if (this.#kept.length === 0) this.#nextBlock = Math.max(this.#nextBlock, last + 1);
        } else {
          // no producer: a new session numbers from 1
          this.#kept.forEach((k, i) => (k.block = i + 1));
          this.#nextBlock = this.#kept.length + 1;
          this.#durableThrough = 0;
        }
        for (const k of this.#kept) k.submitted = false;
        this.#session = Session.of(a);
        return;
      } catch (e) {
        await retryOrThrow(b, e);
      }
    }
  }

  /** Sends one block (write, then commit without waiting for durability), after waiting while `window` blocks are not known durable; the block's number. */
  send(events: readonly Event[]): Promise<number> {
    return this.sendEncoded(encodeEvents(events));
  }

  /** {@link Writer.send} with the events' JSON array already encoded. */
  async sendEncoded(eventsJson: Uint8Array): Promise<number> {
    while (this.#kept.length >= this.window) await this.#waitDurable((this.#kept[0] as Kept).block);
    const block = this.#nextBlock++;
    this.#kept.push({ block, events: eventsJson, submitted: false, sent: performance.now() });
    await this.#submitAll();
    return block;
  }

  async #submitAll(): Promise<void> {
    const b = this.backoff.copy();
    if (this.#session === null) await this.#allocate();
    let i = 0;
    while (i < this.#kept.length) {
      const k = this.#kept[i] as Kept;
      if (k.submitted) {
        i++;
        continue;
      }
      const s = this.#session;
      if (s === null) {
        await this.#allocate();
        i = 0;
        continue;
      }
      try {
        await this.client.write(s, k.block, k.events);
        await this.client.commit(s, k.block, false);
      } catch (e) {
        if (e instanceof SwitchboardError) {
          if (e.isFenced) throw e;
          if (e.isSessionGone || (e.code === "conflict" && this.producer !== undefined)) {
            // gone, or at or below last_block after a race with another session of this producer
            this.#session = null;
            continue;
          }
        }
        await retryOrThrow(b, e);
        continue;
      }
      k.submitted = true;
      b.reset();
      i++;
    }
  }

  async #waitDurable(block: number): Promise<void> {
    const b = this.backoff.copy();
    const covered = (): boolean => this.#kept.length === 0 || (this.#kept[0] as Kept).block > block;
    for (;;) {
      if (covered()) return;
      await this.#submitAll();
      if (covered()) return; // a new session's last_block covered it
      const s = this.#session;
      if (s === null) continue;
      try {
        const a = await this.client.commit(s, block, true);
        if (a.status === "durable") {
          const now = performance.now();
          while (this.#kept.length > 0 && (this.#kept[0] as Kept).block <= block) {
            this.#latencies.push(now - (this.#kept.shift() as Kept).sent);
          }
          this.#durableThrough = Math.max(this.#durableThrough, block);
          return;
        }
      } catch (e) {
        if (e instanceof SwitchboardError) {
          if (e.isFenced) throw e;
          if (e.isSessionGone) {
            this.#session = null;
            continue;
          }
        }
        await retryOrThrow(b, e);
      }
    }
  }

  /** Waits until every block sent is durable; the last block. */
  async flush(): Promise<number> {
    const last = this.#kept[this.#kept.length - 1];
    if (last !== undefined) await this.#waitDurable(last.block);
    return this.#durableThrough;
  }

  /** Flushes, then disposes the session; the last durable block. */
  async close(): Promise<number> {
    const d = await this.flush();
    const s = this.#session;
    this.#session = null;
    if (s !== null) await this.client.disposeQuietly(s);
    return d;
  }
}
