/** Request signing: `X-Switchboard-Signature` (docs/PROTOCOL.md), on Web Crypto. */

export const HEADER = "X-Switchboard-Signature";

const enc = new TextEncoder();

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

/** The header value for a call: HMAC-SHA256 with the session's secret over `t`, the method, the path and query as sent, and the hex SHA-256 of the body as sent. */
export async function sign(
  secret: string | CryptoKey,
  tMs: number,
  method: string,
  path: string,
  body: Uint8Array<ArrayBuffer>,
): Promise<string> {
  const key = typeof secret === "string" ? await signingKey(secret) : secret;
  const digest = hex(await crypto.subtle.digest("SHA-256", body));
  const mac = hex(await crypto.subtle.sign("HMAC", key, enc.encode(`${tMs}\n${method}\n${path}\n${digest}`)));
  return `t=${tMs},v1=${mac}`;
}
