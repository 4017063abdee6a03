// Against a real server: SWITCHBOARD_BIN names the binary (skipped without it).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { ApiError, Client, Reader, Writer, binaryEvent, event, eventBytes } from "../dist/index.js";

const TOKEN = "ts-sdk-test-token-0123456789";
const bin = process.env.SWITCHBOARD_BIN;
let server;
let url;
let dir;

before(async () => {
  if (!bin) return;
  dir = mkdtempSync(join(tmpdir(), "sb-ts-"));
  server = spawn(bin, ["serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--token", TOKEN, "--lease-ms", "2000"], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  const lines = createInterface({ input: server.stdout });
  const first = await new Promise((resolve) => lines.once("line", resolve));
  assert.match(first, /^switchboard listening on /);
  url = first.replace("switchboard listening on ", "").trim();
});

after(async () => {
  // the server writes while it drains: its files go once it has exited
  if (server && server.exitCode === null && server.signalCode === null) {
    const exited = new Promise((resolve) => server.once("exit", resolve));
    server.kill("SIGTERM");
    const late = setTimeout(() => server.kill("SIGKILL"), 30_000);
    await exited;
    clearTimeout(late);
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const name = () => `ts-${Math.random().toString(16).slice(2, 14)}`;
const skip = !bin && "SWITCHBOARD_BIN is not set";

for (const transport of ["node", "fetch"]) test(`publish, write with a producer and consume (${transport})`, { skip }, async () => {
  const s = name();
  const c = new Client(url, { token: () => TOKEN, compression: "gzip", transport });
  const { stream, created } = await c.createStream(s, { partitions: 2 });
  assert.ok("session" in (await c.config()));
  assert.equal(await c.ready(), true);
  assert.match(String((await c.openapi()).openapi), /^3\.1/);
  assert.ok(created);
  assert.equal(stream.partitions, 2);
  assert.equal((await c.createStream(s, { partitions: 2 })).created, false);
  await c.publish(s, [event({ i: -1 }, { key: "a", headers: { h: "1" } }), binaryEvent(new Uint8Array([0, 255]), { key: "b" })]);
  const w = await Writer.open(c, s, { producer: "p1" });
  for (let b = 0; b < 3; b++) {
    await w.send(Array.from({ length: 10 }, (_, j) => event({ i: b * 10 + j }, { key: `k${j}` })));
  }
  assert.equal(await w.close(), 3);
  const r = await Reader.open(c, s, "earliest", { maxEvents: 7 });
  const got = [];
  for await (const batch of r.batches()) {
    got.push(...batch.events);
    if (got.length >= 32) break;
  }
  await r.close();
  assert.equal(got.length, 32);
  assert.deepEqual(eventBytes(got.find((e) => e.key === "b")), new Uint8Array([0, 255]));
  assert.deepEqual(got.find((e) => e.key === "a").headers, { h: "1" });
  const w2 = await Writer.open(c, s, { producer: "p1" });
  assert.equal(await w2.send([event(1)]), 4, "a second writer of the producer goes on after block 3");
  await w2.close();
});

test("a reader resumes from its cursor; errors are typed", { skip }, async () => {
  const s = name();
  const c = new Client(url, { token: TOKEN });
  await c.createStream(s);
  await c.publish(s, Array.from({ length: 20 }, (_, i) => event(i)));
  const r = await Reader.open(c, s, "earliest", { maxEvents: 5 });
  const b = await r.next();
  assert.deepEqual(b.events.map((e) => e.value), [0, 1, 2, 3, 4]);
  assert.equal((await r.next()).batch, b.batch, "an unacked batch comes again");
  const cursor = await r.ack();
  await r.close();
  const r2 = await Reader.open(c, s, cursor, { maxEvents: 100, waitMs: 0 });
  assert.deepEqual((await r2.next()).events.map((e) => e.value), Array.from({ length: 15 }, (_, i) => i + 5));
  await r2.close();
  await assert.rejects(Reader.open(c, s, cursor.slice(0, -3) + "AAA"), (e) => e instanceof ApiError && e.code === "bad_cursor" && !e.retryable && !!e.requestId);
  await assert.rejects(Writer.open(c, name()), (e) => e.code === "stream_not_found");
});

test("a batch held past the lease is still acked on its session", { skip }, async () => {
  const s = name();
  const c = new Client(url, { token: TOKEN });
  await c.createStream(s);
  await c.publish(s, [event(1), event(2)]);
  const r = await Reader.open(c, s, "earliest");
  await r.next();
  const session = r.session;
  await new Promise((res) => setTimeout(res, 3500)); // the lease is 2 s
  const before = r.cursor;
  assert.notEqual(await r.ack(), before);
  assert.equal(r.session, session);
  await r.close();
});
