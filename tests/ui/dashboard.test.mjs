// The dashboard in a real browser: headless Chromium (Debian's) driven by
// playwright-core against a real `switchboard serve` on a loopback port.
// Sign in, create a stream, see it listed, publish through the API, and
// see the offsets and the throughput chart move. A screenshot is kept in
// $UI_ARTIFACTS (default target/ui-artifacts).
//
//   SWITCHBOARD_BIN=target/debug/switchboard node --test tests/ui/

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const root = resolve(import.meta.dirname, "../..");
const bin = resolve(root, process.env.SWITCHBOARD_BIN || "target/debug/switchboard");
const artifacts = resolve(root, process.env.UI_ARTIFACTS || "target/ui-artifacts");
const browserPath = process.env.CHROMIUM || "/usr/bin/chromium";
const token = "ui-test-token-" + Math.random().toString(36).slice(2, 14);

let server, url, browser, work;

before(async () => {
  work = mkdtempSync(join(tmpdir(), "switchboard-ui-"));
  server = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(work, "data"), "--token", token],
    { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, SWITCHBOARD_LOG_LEVEL: "warn" } });
  url = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error("the server did not start")), 30000);
    server.on("exit", (code) => fail(new Error("the server exited with " + code)));
    createInterface({ input: server.stdout }).on("line", (line) => {
      const m = /^switchboard listening on (\S+)/.exec(line);
      if (m) { clearTimeout(timer); ok(m[1]); }
    });
  });
  browser = await chromium.launch({
    executablePath: browserPath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server && server.exitCode === null) {
    const exited = new Promise((ok) => server.on("exit", ok));
    server.kill("SIGTERM");
    await exited;
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

async function call(method, path, body) {
  const resp = await fetch(url + path, {
    method,
    headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  assert.ok(resp.ok, `${method} ${path}: ${resp.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

test("sign in, create a stream, watch it fill", async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const offsite = [];
  page.on("request", (r) => { if (!r.url().startsWith(url)) offsite.push(r.url()); });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

  await page.goto(url + "/ui");
  assert.equal(await page.title(), "Switchboard");

  // a wrong token is refused and says so
  await page.fill("#token", "not-the-token-at-all");
  await page.click("#signin button");
  await page.waitForFunction(() => document.getElementById("signin-msg").textContent.includes("refused"));
  assert.ok(await page.isHidden("#dashboard"));
  errors.length = 0; // the browser logs the refused call (401) as an error

  await page.fill("#token", token);
  await page.click("#signin button");
  await page.waitForSelector("#dashboard:not([hidden])");
  // the configuration is shown, and the token is not in it
  await page.waitForFunction(() => document.getElementById("config").textContent.includes("\"fsync\""));
  const config = await page.textContent("#config");
  assert.ok(!config.includes(token), "the configuration shows the token");
  assert.ok(config.includes("<redacted>"), config);
  await page.waitForFunction(() => document.querySelectorAll("#nodes tr").length === 1);
  assert.match(await page.textContent("#nodes"), /ready/);

  await page.fill("#create-name", "clicks");
  await page.fill("#create-partitions", "3");
  await page.click("#create button");
  await page.waitForFunction(() => document.getElementById("create-msg").textContent === "created clicks");
  const row = 'tr[data-stream="clicks"]';
  await page.waitForSelector(row);
  assert.equal((await page.textContent(`${row} td.ends`)).trim(), "0 0 0");

  // publish through the API, in rounds, while the page polls
  const events = Array.from({ length: 200 }, (_, i) => ({ key: "user-" + (i % 7), value: { n: i } }));
  for (let round = 0; round < 4; round++) {
    await call("POST", "/v1/streams/clicks/events", { events });
    await new Promise((r) => setTimeout(r, 700));
  }
  await page.waitForFunction(
    (sel) => document.querySelector(sel + " td.held")?.textContent === "800", row, { timeout: 15000 });
  const ends = (await page.textContent(`${row} td.ends`)).trim().split(" ").map(Number);
  const described = await call("GET", "/v1/streams/clicks");
  assert.deepEqual(ends, described.end_offsets);

  // the chart moved: a positive rate was drawn
  await page.waitForFunction(() => Number(document.getElementById("chart").dataset.max) >= 1, null,
    { timeout: 15000 });
  const points = await page.getAttribute("#chart polyline.in", "data-points");
  assert.ok(Number(points) >= 2, "the chart has " + points + " points");
  const peak = await page.textContent("#chart-max");
  assert.match(peak, /events\/s/);

  mkdirSync(artifacts, { recursive: true });
  const shot = join(artifacts, "dashboard.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log("screenshot: " + shot);

  // sign out forgets the token
  await page.click("#signout");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("switchboard.token")), null);

  assert.deepEqual(offsite, [], "the page made requests off the node");
  assert.deepEqual(errors, [], "the page logged errors");
  await page.close();
});
