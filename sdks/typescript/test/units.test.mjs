import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { ApiError, Backoff, GaveUpError, TransportError, binaryEvent, eventBytes, sign } from "../dist/index.js";
import { retryOrThrow } from "../dist/retry.js";
import { signWebCrypto } from "../dist/signing.js";

const vectors = JSON.parse(
  readFileSync(new URL("../../../crates/proto/tests/vectors/signing.json", import.meta.url), "utf8"),
);

test("signing matches the shared vectors", async () => {
  assert.ok(vectors.cases.length > 0);
  for (const c of vectors.cases) {
    const body = new TextEncoder().encode(c.body);
    assert.equal(await sign(c.secret, c.t, c.method, c.path, body), c.header);
    assert.equal(await signWebCrypto(c.secret, c.t, c.method, c.path, body), c.header, "the browsers' path");
  }
});

test("backoff grows to its cap and honours a floor", () => {
  const b = new Backoff(10, 40, 5);
  for (let i = 0; i < 5; i++) {
    const d = b.nextDelay();
    assert.ok(d !== null && d >= 0 && d <= 40);
  }
  assert.equal(b.nextDelay(), null);
  assert.ok(new Backoff(1, 1).nextDelay(300) >= 300);
});

test("errors carry code, retryable and request id", () => {
  const e = ApiError.fromBody(
    429,
    { error: { code: "backpressure", message: "full", retryable: true, retry_after_ms: 20 } },
    "req-1",
  );
  assert.ok(e instanceof ApiError);
  assert.deepEqual([e.code, e.retryable, e.requestId, e.retryAfterMs], ["backpressure", true, "req-1", 20]);
  assert.match(e.message, /req-1/);
  const gone = ApiError.fromBody(410, { error: { code: "session_gone", message: "", fenced_by_epoch: 3 } }, null);
  assert.ok(gone.isSessionGone && gone.isFenced);
  assert.ok(new ApiError(503, "unavailable", "", false, null).retryable, "unavailable heals by waiting");
  assert.ok(new TransportError("reset").retryable);
});

test("retries give up with the last error, and never retry what cannot heal", async () => {
  const b = new Backoff(1, 1, 2);
  const e = new ApiError(503, "unavailable", "draining", true, "r");
  await retryOrThrow(b, e);
  await retryOrThrow(b, e);
  await assert.rejects(retryOrThrow(b, e), (g) => g instanceof GaveUpError && g.code === "unavailable" && g.requestId === "r");
  await assert.rejects(retryOrThrow(new Backoff(), new ApiError(409, "conflict", "", false, null)), ApiError);
});

test("binary values round-trip", () => {
  const data = new Uint8Array([0, 1, 254, 255]);
  assert.deepEqual(eventBytes(binaryEvent(data, { key: "k" })), data);
});
