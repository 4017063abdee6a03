/** The protocol's JSON shapes (docs/PROTOCOL.md). */

/** An event as written: `value` (any JSON) or `value_b64` (bytes, standard base64), never both. */
export interface Event {
  key?: string;
  headers?: Record<string, string>;
  value?: unknown;
  value_b64?: string;
}

/** An event as read: the written fields, and where it is. */
export interface ReadEvent extends Event {
  partition: number;
  offset: number;
  timestamp: string;
}

/** Offsets `from` to `to - 1` of `partition` were removed by retention before they could be read. */
export interface Gap {
  partition: number;
  from: number;
  to: number;
}

export interface ReadAnswer {
  batch: number;
  events: ReadEvent[];
  cursor: string;
  gaps?: Gap[];
}

export interface AckAnswer {
  batch: number;
  cursor: string;
}

export interface WriteAnswer {
  block: number;
  events: number;
}

export interface CommitAnswer {
  block: number;
  status: "scheduled" | "durable";
  offsets?: { partition: number; first: number; last: number }[];
}

export interface Allocated {
  session: string;
  secret: string;
  mode: "read" | "write";
  stream: string;
  lease_ms: number;
  node: string;
  cursor?: string;
  last_block?: number;
}

export interface SessionInfo {
  mode: "read" | "write";
  stream: string;
  lease_ms: number;
  cursor?: string;
  pending_batch?: number;
  last_block?: number;
  durable_through_block?: number;
  blocks_in_flight?: number;
}

export interface StreamSettings {
  partitions?: number;
  retention_ms?: number;
  retention_bytes?: number;
  encrypt_keys?: boolean;
}

export interface StreamInfo {
  name: string;
  partitions: number;
  retention_ms?: number | null;
  retention_bytes?: number | null;
  encrypt_keys?: boolean;
}

export interface StreamDescription extends StreamInfo {
  start_offsets: number[];
  end_offsets: number[];
}

export interface PublishAnswer {
  offsets: { partition: number; offset: number }[];
}

export interface ClusterInfo {
  nodes: Record<string, unknown>[];
  brokers?: Record<string, unknown>[];
}
