/** Request signing: `X-Switchboard-Signature` (docs/PROTOCOL.md), on `node:crypto` or Web Crypto. */

import { nodeCrypto } from "./platform.js";

export const HEADER = "X-Switchboard-Signature";

const enc = new TextEncoder();

const stringToSign = (tMs: number, method: string, path: string, bodyHex: string): string =>
  `${tMs}\n${method}\n${path}\n${bodyHex}`;

function hex(buf: ArrayBuffer): string {
  const b = new Uint8Array(buf);
  let s = "";
  for (let i = 0; i < b.length; i++) s += (b[i] as number).toString(16).padStart(2, "0");
  return s;
}

/** An HMAC-SHA256 key for a session's secret (import once, sign many). */
export function signingKey(secret: string): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
}

/**
 * The header value for a call: HMAC-SHA256 with the session's secret over `t`, the method, the path and query as
 * sent, and the hex SHA-256 of the body as sent. `key` is the secret imported by {@link signingKey}, used where
 * `node:crypto` is not.
 */
export async function sign(
  secret: string,
  tMs: number,
  method: string,
  path: string,
  body: Uint8Array<ArrayBuffer>,
  key?: Promise<CryptoKey>,
): Promise<string> {
  const c = nodeCrypto;
  if (c !== null) {
    const digest = c.createHash("sha256").update(body).digest("hex");
    const mac = c.createHmac("sha256", secret).update(stringToSign(tMs, method, path, digest)).digest("hex");
    return `t=${tMs},v1=${mac}`;
  }
  return signWebCrypto(secret, tMs, method, path, body, key);
}

/** {@link sign} on Web Crypto alone (what browsers use). */
export async function signWebCrypto(
  secret: string,
  tMs: number,
  method: string,
  path: string,
  body: Uint8Array<ArrayBuffer>,
  key?: Promise<CryptoKey>,
): Promise<string> {
  const k = await (key ?? signingKey(secret));
  const digest = hex(await crypto.subtle.digest("SHA-256", body));
  const mac = hex(await crypto.subtle.sign("HMAC", k, enc.encode(stringToSign(tMs, method, path, digest))));
  return `t=${tMs},v1=${mac}`;
}
