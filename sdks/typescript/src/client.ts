/** One typed method per endpoint of docs/PROTOCOL.md. */

import { ApiError, ProtocolError, SwitchboardError } from "./errors.js";
import { Backoff, retryOrThrow } from "./retry.js";
import { HEADER, sign, signingKey } from "./signing.js";
import { isNode, nodeZlib } from "./platform.js";
import { fetchTransport, nodeTransport, type Transport } from "./transport.js";
import type {
  AckAnswer,
  Allocated,
  ClusterInfo,
  CommitAnswer,
  Event,
  PublishAnswer,
  ReadAnswer,
  SessionInfo,
  StreamDescription,
  StreamInfo,
  StreamSettings,
  WriteAnswer,
} from "./types.js";

/** A bearer token, or a function giving a fresh one for each call (an OAuth2 token manager's). */
export type TokenSource = string | (() => string | Promise<string>);

export interface ClientOptions {
  /** Bearer token or token callback. */
  token: TokenSource;
  /** A CA certificate (PEM) to trust besides the system roots (Node.js). */
  ca?: string | Uint8Array;
  /** `node` (`node:http(s)`, the default on Node.js) or `fetch` (the default elsewhere, and the only one there). */
  transport?: "node" | "fetch";
  /** Compresses request bodies of 1 KiB and more (`gzip`, on `CompressionStream`). */
  compression?: "none" | "gzip";
  /** Asks for compressed answers (default true). */
  acceptCompressed?: boolean;
  /** Per-call timeout in ms, besides a read's own wait (default 60 000). */
  timeoutMs?: number;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
}

/** A session: its id, signing secret and lease. */
export class Session {
  #key: Promise<CryptoKey> | undefined;

  constructor(
    readonly id: string,
    readonly secret: string,
    readonly leaseMs = 30_000,
  ) {}

  static of(a: Allocated): Session {
    return new Session(a.session, a.secret, a.lease_ms ?? 30_000);
  }

  /** The HMAC key for Web Crypto, imported once. */
  key(): Promise<CryptoKey> {
    this.#key ??= signingKey(this.secret);
    return this.#key;
  }

  toJSON(): { id: string } {
    return { id: this.id }; // the secret stays out of logs
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const COMPRESS_FROM = 1024;

/** The JSON array of a block's events, encoded once so that retries send the same bytes. */
export function encodeEvents(events: readonly Event[]): Uint8Array<ArrayBuffer> {
  return enc.encode(JSON.stringify(events));
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

async function gzip(data: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  const zlib = nodeZlib;
  if (zlib !== null) {
    // on zlib's thread pool: a large body does not hold the event loop
    const z = await new Promise<Buffer>((resolve, reject) =>
      zlib.gzip(data, { level: 1 }, (e, out) => (e ? reject(e) : resolve(out))),
    );
    return new Uint8Array(z.buffer.slice(z.byteOffset, z.byteOffset + z.byteLength) as ArrayBuffer);
  }
  const stream = new Blob([data]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

const name = (s: string): string => encodeURIComponent(s);

function randomKey(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** A connection to a Switchboard server. */
export class Client {
  readonly base: string;
  readonly options: ClientOptions;
  #transport: Promise<Transport>;

  constructor(url: string, options: ClientOptions) {
    if (!/^https?:\/\//.test(url)) throw new TypeError(`not an http(s) URL: ${url}`);
    const c = options.compression ?? "none";
    if (c !== "none" && c !== "gzip") throw new TypeError(`unsupported compression ${String(c)}`);
    this.base = url.replace(/\/+$/, "");
    this.options = options;
    const node = options.transport === "node" || (options.transport === undefined && isNode && options.fetch === undefined);
    if (options.ca !== undefined && !isNode) throw new TypeError("`ca` needs Node.js; elsewhere the platform's trust store applies");
    if (options.transport === "fetch" && options.ca !== undefined) throw new TypeError("`ca` needs the node transport");
    this.#transport = node || options.ca !== undefined ? nodeTransport(options.ca) : Promise.resolve(fetchTransport(options.fetch));
  }

  async #bearer(): Promise<string> {
    const t = this.options.token;
    const v = typeof t === "function" ? await t() : t;
    if (typeof v !== "string") throw new TypeError("the token callback returned no string");
    return `Bearer ${v.trim()}`;
  }

  /** Sends one call; the status and decoded JSON answer, or throws the error the server answered with. */
  async request(
    method: string,
    path: string,
    body?: Uint8Array<ArrayBuffer>,
    opts: { session?: Session; headers?: Record<string, string>; timeoutMs?: number } = {},
  ): Promise<{ status: number; value: unknown }> {
    const headers: Record<string, string> = { authorization: await this.#bearer() };
    if (this.options.acceptCompressed === false) headers["accept-encoding"] = "identity";
    let data = body;
    if (data !== undefined) {
      headers["content-type"] = "application/json";
      if (this.options.compression === "gzip" && data.length >= COMPRESS_FROM) {
        data = await gzip(data);
        headers["content-encoding"] = "gzip";
      }
    }
    if (opts.session) {
      const s = opts.session;
      headers[HEADER] = await sign(s.secret, Date.now(), method, path, data ?? new Uint8Array(), isNode ? undefined : s.key());
    }
    Object.assign(headers, opts.headers);
    const transport = await this.#transport;
    const resp = await transport(method, this.base + path, headers, data, opts.timeoutMs ?? this.options.timeoutMs ?? 60_000);
    const rid = resp.header("x-request-id");
    let value: unknown = null;
    if (resp.body.length > 0) {
      try {
        value = JSON.parse(dec.decode(resp.body));
      } catch {
        const p = new ProtocolError(`status ${resp.status} with a body that is not JSON`);
        p.status = resp.status;
        p.requestId = rid;
        throw p;
      }
    }
    if (resp.status >= 400) throw ApiError.fromBody(resp.status, value, rid);
    return { status: resp.status, value };
  }

  async #json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const { value } = await this.request(method, path, body === undefined ? undefined : enc.encode(JSON.stringify(body)));
    return value as T;
  }

  /** `POST /v1/streams`: the stream, and whether it was created (not already there with the same settings). */
  async createStream(stream: string, settings: StreamSettings = {}): Promise<{ stream: StreamInfo; created: boolean }> {
    const { status, value } = await this.request("POST", "/v1/streams", enc.encode(JSON.stringify({ name: stream, ...settings })));
    return { stream: value as StreamInfo, created: status === 201 };
  }

  /** `GET /v1/streams`. */
  async listStreams(): Promise<StreamInfo[]> {
    return (await this.#json<{ streams: StreamInfo[] }>("GET", "/v1/streams")).streams;
  }

  /** `GET /v1/streams/{name}`. */
  describeStream(stream: string): Promise<StreamDescription> {
    return this.#json("GET", `/v1/streams/${name(stream)}`);
  }

  /** `DELETE /v1/streams/{name}`. */
  async deleteStream(stream: string): Promise<void> {
    await this.request("DELETE", `/v1/streams/${name(stream)}`);
  }

  /**
   * `POST /v1/streams/{name}/events`, answered once durable. Safe to repeat: without an `idempotencyKey` one is
   * generated, and transport failures and retryable errors are retried under it (honouring `retry_after_ms`), so
   * each event is stored once even when an answer is lost.
   */
  async publish(
    stream: string,
    events: readonly Event[],
    opts: { idempotencyKey?: string; backoff?: Backoff } = {},
  ): Promise<PublishAnswer> {
    const key = opts.idempotencyKey ?? randomKey();
    const body = concat(enc.encode('{"events":'), encodeEvents(events), enc.encode("}"));
    const backoff = (opts.backoff ?? new Backoff()).copy();
    for (;;) {
      try {
        const { value } = await this.request("POST", `/v1/streams/${name(stream)}/events`, body, {
          headers: { "idempotency-key": key },
        });
        return value as PublishAnswer;
      } catch (e) {
        await retryOrThrow(backoff, e);
      }
    }
  }

  /** `POST /v1/sessions`. */
  allocate(
    stream: string,
    mode: "read" | "write",
    opts: { cursor?: string; partitions?: number[]; producer?: string } = {},
  ): Promise<Allocated> {
    return this.#json("POST", "/v1/sessions", { stream, mode, ...opts });
  }

  async #on<T>(method: string, s: Session, op: string, body?: Uint8Array<ArrayBuffer>, timeoutMs?: number): Promise<T> {
    const opts: { session: Session; timeoutMs?: number } = { session: s };
    if (timeoutMs !== undefined) opts.timeoutMs = timeoutMs;
    return (await this.request(method, `/v1/sessions/${name(s.id)}${op}`, body, opts)).value as T;
  }

  /** `GET /v1/sessions/{id}`: the heartbeat. */
  sessionInfo(s: Session): Promise<SessionInfo> {
    return this.#on("GET", s, "");
  }

  /** `POST /v1/sessions/{id}/read`. */
  read(s: Session, opts: { max_events?: number; max_bytes?: number; wait_ms?: number } = {}): Promise<ReadAnswer> {
    const timeout = (this.options.timeoutMs ?? 60_000) + (opts.wait_ms ?? 0);
    return this.#on("POST", s, "/read", enc.encode(JSON.stringify(opts)), timeout);
  }

  /** `POST /v1/sessions/{id}/ack`. */
  ack(s: Session, batch: number): Promise<AckAnswer> {
    return this.#on("POST", s, "/ack", enc.encode(`{"batch":${batch}}`));
  }

  /** `POST /v1/sessions/{id}/write`; `events` may be pre-encoded ({@link encodeEvents}). */
  write(s: Session, block: number, events: readonly Event[] | Uint8Array): Promise<WriteAnswer> {
    const data = events instanceof Uint8Array ? events : encodeEvents(events);
    return this.#on("POST", s, "/write", concat(enc.encode(`{"block":${block},"events":`), data, enc.encode("}")));
  }

  /** `POST /v1/sessions/{id}/commit`. */
  commit(s: Session, block: number, durable = false): Promise<CommitAnswer> {
    return this.#on("POST", s, "/commit", enc.encode(`{"block":${block},"durable":${durable}}`));
  }

  /** `DELETE /v1/sessions/{id}`. */
  dispose(s: Session): Promise<unknown> {
    return this.#on("DELETE", s, "");
  }

  /** `GET /readyz`: whether the node serves (false while it drains, while its store is out of reach, or, on an API node, while no backend serves). */
  async ready(): Promise<boolean> {
    const transport = await this.#transport;
    const resp = await transport("GET", this.base + "/readyz", {}, undefined, this.options.timeoutMs ?? 60_000);
    if (resp.status !== 200 && resp.status !== 503) {
      const p = new ProtocolError(`/readyz answered ${resp.status}`);
      p.status = resp.status;
      p.requestId = resp.header("x-request-id");
      throw p;
    }
    return resp.status === 200;
  }

  /** `GET /v1/openapi.json`: the contract as OpenAPI 3.1. */
  openapi(): Promise<Record<string, unknown>> {
    return this.#json("GET", "/v1/openapi.json");
  }

  /** Disposes a session, best effort: its lease ends it anyway. */
  async disposeQuietly(s: Session): Promise<void> {
    try {
      await this.dispose(s);
    } catch {
      // the lease ends it
    }
  }

  /** `GET /v1/config`: the node's effective configuration, secrets redacted (needs `switchboard:admin`). */
  config(): Promise<Record<string, unknown>> {
    return this.#json("GET", "/v1/config");
  }

  /** `GET /v1/cluster`. */
  cluster(): Promise<ClusterInfo> {
    return this.#json("GET", "/v1/cluster");
  }
}

export { SwitchboardError };
