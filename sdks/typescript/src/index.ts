/**
 * TypeScript SDK for Switchboard.
 *
 * - {@link Client}: one typed method per endpoint; session calls are signed with the session's secret.
 * - {@link Reader}: the client half of `read -> ack`: retries with backoff, re-allocates from the last acked cursor
 *   when the session is lost, renews the lease while a batch is out, reports gaps.
 * - {@link Writer}: the client half of `write -> commit`: numbers blocks, pipelines commits up to a window,
 *   honours `backpressure`, and with a producer id replays the blocks after `last_block` into a new session.
 */

import type { Event, ReadEvent } from "./types.js";

export { Client, Session, encodeEvents, type ClientOptions, type TokenSource } from "./client.js";
export { ApiError, GaveUpError, ProtocolError, SwitchboardError, TransportError } from "./errors.js";
export { Reader, type Batch, type ReaderOptions } from "./reader.js";
export { Backoff } from "./retry.js";
export { HEADER as SIGNATURE_HEADER, sign } from "./signing.js";
export { Writer, type WriterOptions } from "./writer.js";
export type * from "./types.js";

export const VERSION = "0.1.0";

/** An event whose value is `value` (any JSON). */
export function event(value: unknown, opts: { key?: string; headers?: Record<string, string> } = {}): Event {
  return { ...opts, value };
}

/** An event whose value is `data` (bytes). */
export function binaryEvent(data: Uint8Array, opts: { key?: string; headers?: Record<string, string> } = {}): Event {
  let s = "";
  for (let i = 0; i < data.length; i++) s += String.fromCharCode(data[i] as number);
  return { ...opts, value_b64: btoa(s) };
}

/** An event's value as bytes: decoded base64, or the JSON text. */
export function eventBytes(e: ReadEvent | Event): Uint8Array {
  if (e.value_b64 !== undefined) return Uint8Array.from(atob(e.value_b64), (c) => c.charCodeAt(0));
  return new TextEncoder().encode(JSON.stringify(e.value ?? null));
}
