// Publishes a few blocks through a writer with a producer id, so that a
// rerun after a crash stores nothing twice.
//   node examples/publish.mjs http://127.0.0.1:7700 "$(cat data/admin.token)"
import { Client, Writer, event } from "../dist/index.js";

const [url, token] = process.argv.slice(2);
const client = new Client(url, { token });
await client.createStream("orders", { partitions: 4 });
const writer = await Writer.open(client, "orders", { producer: "orders-example" });
for (let i = 0; i < 10; i++) {
  const block = await writer.send(Array.from({ length: 10 }, (_, j) => event({ order: i * 10 + j }, { key: `customer-${j}` })));
  console.log("sent block", block);
}
console.log("durable through block", await writer.close());
