/**
 * What the platform offers. On Node.js the SDK uses `node:http(s)` with a keep-alive agent and `node:crypto`
 * (measured: about 1.4x the read rate of `fetch` with Web Crypto on Node.js 20, where each `fetch` and each
 * `crypto.subtle` call costs about a millisecond); elsewhere `fetch` and Web Crypto.
 */

type NodeCrypto = typeof import("node:crypto");
type NodeZlib = typeof import("node:zlib");

export const isNode: boolean = typeof process !== "undefined" && typeof process.versions?.node === "string";

// specifiers kept out of reach of bundlers for browsers
const cryptoSpec = "node:crypto";
const zlibSpec = "node:zlib";

/** `node:crypto` on Node.js, else null. */
export const nodeCrypto: NodeCrypto | null = isNode ? ((await import(cryptoSpec)) as NodeCrypto) : null;

/** `node:zlib` on Node.js, else null. */
export const nodeZlib: NodeZlib | null = isNode ? ((await import(zlibSpec)) as NodeZlib) : null;
