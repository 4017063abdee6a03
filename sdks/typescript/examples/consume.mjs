// Consumes a stream from a saved cursor (or the beginning), saving the
// cursor after each batch, so that a restart resumes where it stopped.
//   node examples/consume.mjs http://127.0.0.1:7700 "$(cat data/admin.token)"
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { Client, Reader } from "../dist/index.js";

const [url, token] = process.argv.slice(2);
const CURSOR = "orders.cursor";
const start = existsSync(CURSOR) ? readFileSync(CURSOR, "utf8") : "earliest";
const reader = await Reader.open(new Client(url, { token }), "orders", start, { waitMs: 2000 });
let seen = 0;
for await (const batch of reader.batches()) {
  for (const gap of batch.gaps) console.warn(`retention removed offsets ${gap.from}..${gap.to - 1} of partition ${gap.partition}`);
  for (const e of batch.events) console.log(e.partition, e.offset, e.key, JSON.stringify(e.value));
  writeFileSync(CURSOR, batch.cursor);
  seen += batch.events.length;
  if (seen >= 100) {
    await reader.ack(); // the loop acks a batch only when it asks for the next
    break;
  }
}
writeFileSync(CURSOR, await reader.close());
