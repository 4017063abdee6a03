// The conformance driver of the TypeScript SDK: commands in, results out,
// one JSON line each (conformance/README.md). Runs the built package (dist/).
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { Client, Reader, SwitchboardError, VERSION, Writer, sign } from "./dist/index.js";

class Fail extends Error {
  constructor(message, code = null) {
    super(message);
    this.code = code;
  }
}

function errorValue(e) {
  if (e instanceof SwitchboardError) {
    return { code: e.code, status: e.status, retryable: e.retryable, request_id: e.requestId, message: e.message };
  }
  return { code: e instanceof Fail ? e.code : null, retryable: false, message: e instanceof Fail ? e.message : String(e?.stack ?? e) };
}

// `--transport fetch` runs the suite on fetch, the browsers' transport
const at = process.argv.indexOf("--transport");
const transport = at > 0 ? process.argv[at + 1] : "node";
let client = null;
const writers = new Map();
const readers = new Map();

function c() {
  if (!client) throw new Fail("connect first");
  return client;
}

function get(map, k) {
  const v = map.get(k);
  if (!v) throw new Fail(`no such handle ${k}`);
  return v;
}

async function read(r, a) {
  const count = a.count ?? 1;
  const deadline = Date.now() + (a.timeout_ms ?? 10_000);
  const hold = a.hold_ms ?? 0;
  const events = [];
  const gaps = [];
  let redelivered = 0;
  while (events.length < count) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    r.waitMs = Math.min(left, 1000);
    const b = await r.next();
    if (b.batch === 0) continue;
    await new Promise((res) => setTimeout(res, hold));
    const before = r.cursor;
    if ((await r.ack()) === before) {
      redelivered++;
      continue;
    }
    events.push(...b.events);
    gaps.push(...b.gaps);
  }
  return { events, gaps, redelivered, cursor: r.cursor };
}

async function bench(a) {
  const total = a.events;
  const block = a.block ?? 500;
  const pad = "x".repeat(Math.max((a.size ?? 1024) - 40, 0));
  const cl = new Client(a.url, { token: a.token, acceptCompressed: false });
  await cl.createStream(a.stream, { partitions: 4 });
  let started = performance.now();
  const w = await Writer.open(cl, a.stream);
  for (let sent = 0; sent < total; ) {
    const n = Math.min(block, total - sent);
    const events = [];
    for (let i = sent; i < sent + n; i++) events.push({ key: `k${i % 64}`, value: { i, pad } });
    await w.send(events);
    sent += n;
  }
  await w.close();
  const publish = total / ((performance.now() - started) / 1000);
  started = performance.now();
  const r = await Reader.open(cl, a.stream, "earliest", { maxEvents: block });
  for (let got = 0; got < total; ) {
    const b = await r.next();
    got += b.events.length;
    await r.ack();
  }
  const consume = total / ((performance.now() - started) / 1000);
  await r.close();
  return { publish_events_per_s: publish, consume_events_per_s: consume };
}

async function handle(cmd, a) {
  switch (cmd) {
    case "hello":
      return { sdk: "typescript", version: VERSION, transport };
    case "connect": {
      const compression = a.compression ?? "none";
      if (compression !== "none" && compression !== "gzip") {
        throw new Fail(`${compression} is not available on Node.js 20`, "unsupported");
      }
      const token = a.token;
      const opts = { token: a.token_callback ? async () => token : token, compression, transport };
      if (a.ca_file) {
        if (transport === "fetch") throw new Fail("a private CA needs the node transport", "unsupported");
        opts.ca = readFileSync(a.ca_file, "utf8");
      }
      client = new Client(a.url, opts);
      return {};
    }
    case "sign":
      return { header: await sign(a.secret, a.t, a.method, a.path, new TextEncoder().encode(a.body)) };
    case "create_stream": {
      const settings = {};
      if (a.partitions !== undefined) settings.partitions = a.partitions;
      if (a.retention_bytes !== undefined) settings.retention_bytes = a.retention_bytes;
      const { created } = await c().createStream(a.name, settings);
      return { created };
    }
    case "publish":
      return { offsets: (await c().publish(a.stream, a.events)).offsets };
    case "writer_open": {
      const opts = { window: a.window ?? 8 };
      if (a.producer) opts.producer = a.producer;
      writers.set(a.writer, await Writer.open(c(), a.stream, opts));
      return {};
    }
    case "writer_send":
      return { block: await get(writers, a.writer).send(a.events) };
    case "writer_flush":
      return { durable_through: await get(writers, a.writer).flush() };
    case "writer_close": {
      const w = get(writers, a.writer);
      writers.delete(a.writer);
      return { durable_through: await w.close() };
    }
    case "reader_open": {
      const opts = {};
      if (a.max_events !== undefined) opts.maxEvents = a.max_events;
      readers.set(a.reader, await Reader.open(c(), a.stream, a.from, opts));
      return {};
    }
    case "reader_read":
      return read(get(readers, a.reader), a);
    case "reader_cursor":
      return { cursor: get(readers, a.reader).cursor };
    case "reader_close": {
      const r = get(readers, a.reader);
      readers.delete(a.reader);
      return { cursor: await r.close() };
    }
    case "bench":
      return bench(a);
    default:
      throw new Fail(`unknown command ${cmd}`, "unsupported");
  }
}

for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  let a = {};
  let answer;
  try {
    a = JSON.parse(line);
    answer = { ok: true, ...(await handle(a.cmd, a)) };
  } catch (e) {
    answer = { ok: false, error: errorValue(e) };
  }
  answer.id = a?.id ?? null;
  process.stdout.write(JSON.stringify(answer) + "\n");
}
