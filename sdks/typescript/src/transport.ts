/** How requests travel: the platform's `fetch` by default, or (on Node.js, for a private CA) `node:https` with a keep-alive agent. */

import { TransportError } from "./errors.js";

export interface HttpResponse {
  status: number;
  header(name: string): string | null;
  body: Uint8Array;
}

export type Transport = (
  method: string,
  url: string,
  headers: Record<string, string>,
  body: Uint8Array<ArrayBuffer> | undefined,
  timeoutMs: number,
) => Promise<HttpResponse>;

/** A transport on `fetch` (Node.js 20+, browsers, Deno, Bun). Answers are decompressed by `fetch` itself. */
export function fetchTransport(f: typeof fetch = globalThis.fetch): Transport {
  return async (method, url, headers, body, timeoutMs) => {
    let resp: Response;
    try {
      resp = await f(url, { method, headers, body, signal: AbortSignal.timeout(timeoutMs) });
    } catch (e) {
      throw new TransportError(`${method} ${url}: ${describe(e)}`, { cause: e });
    }
    let data: Uint8Array;
    try {
      data = new Uint8Array(await resp.arrayBuffer());
    } catch (e) {
      throw new TransportError(`${method} ${url}: the answer broke off: ${describe(e)}`, { cause: e });
    }
    return { status: resp.status, header: (n) => resp.headers.get(n), body: data };
  };
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    return cause instanceof Error ? `${e.message} (${cause.message})` : e.message;
  }
  return String(e);
}

/** A transport on `node:http`/`node:https` with keep-alive agents, trusting `ca` (PEM) besides Node's own roots. Node.js only. */
export async function nodeTransport(ca?: string | Uint8Array): Promise<Transport> {
  const https = await import("node:https");
  const http = await import("node:http");
  const zlib = await import("node:zlib");
  const tls = await import("node:tls");
  const caList =
    ca === undefined ? undefined : [...tls.rootCertificates, typeof ca === "string" ? ca : new TextDecoder().decode(ca)];
  const agents = {
    "https:": new https.Agent({ keepAlive: true, maxSockets: 64, ...(caList ? { ca: caList } : {}) }),
    "http:": new http.Agent({ keepAlive: true, maxSockets: 64 }),
  };
  // answers are decoded on zlib's thread pool: a large one does not hold the event loop
  type Decode = (b: Buffer, cb: (e: Error | null, out: Buffer) => void) => void;
  const decoders: Record<string, Decode> = { gzip: zlib.gunzip, deflate: zlib.inflate, br: zlib.brotliDecompress };
  return (method, url, headers, body, timeoutMs) =>
    new Promise<HttpResponse>((resolve, reject) => {
      const u = new URL(url);
      const mod = u.protocol === "https:" ? https : http;
      const agent = u.protocol === "https:" ? agents["https:"] : agents["http:"];
      const h: Record<string, string> = { ...headers };
      if (!Object.keys(h).some((k) => k.toLowerCase() === "accept-encoding")) h["accept-encoding"] = "gzip";
      if (body) h["content-length"] = String(body.length);
      const req = mod.request(u, { method, headers: h, agent, timeout: timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", (e) => reject(new TransportError(`${method} ${url}: ${e.message}`, { cause: e })));
        res.on("end", () => {
          const raw: Buffer = Buffer.concat(chunks);
          const encoding = String(res.headers["content-encoding"] ?? "").toLowerCase();
          const decode = decoders[encoding];
          if (decode === undefined) {
            done(raw);
            return;
          }
          decode(raw, (e, out) => {
            if (e) reject(new TransportError(`${method} ${url}: a body that does not decode`, { cause: e }));
            else done(out);
          });
        });
        const done = (data: Buffer): void =>
          resolve({
            status: res.statusCode ?? 0,
            header: (n) => {
              const v = res.headers[n.toLowerCase()];
              return v === undefined ? null : Array.isArray(v) ? v.join(", ") : v;
            },
            body: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
          });
      });
      req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on("error", (e) => reject(new TransportError(`${method} ${url}: ${e.message}`, { cause: e })));
      req.end(body);
    });
}
