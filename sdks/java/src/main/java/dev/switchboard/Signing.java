package dev.switchboard;

import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/** Request signing: {@code X-Switchboard-Signature} (docs/PROTOCOL.md). */
public final class Signing {
  /** The header's name. */
  public static final String HEADER = "X-Switchboard-Signature";

  private static final char[] HEX = "0123456789abcdef".toCharArray();

  private Signing() {}

  /**
   * The header value for a call: HMAC-SHA256 with the session's secret over {@code t}, the method, the path and query
   * as sent, and the hex SHA-256 of the body as sent.
   */
  public static String sign(String secret, long tMs, String method, String path, byte[] body) {
    try {
      String digest = hex(MessageDigest.getInstance("SHA-256").digest(body));
      Mac mac = Mac.getInstance("HmacSHA256");
      mac.init(new SecretKeySpec(secret.getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
      String msg = tMs + "\n" + method + "\n" + path + "\n" + digest;
      return "t=" + tMs + ",v1=" + hex(mac.doFinal(msg.getBytes(StandardCharsets.UTF_8)));
    } catch (GeneralSecurityException e) {
      throw new IllegalStateException("HMAC-SHA256 is not available", e);
    }
  }

  static String hex(byte[] b) {
    char[] out = new char[b.length * 2];
    for (int i = 0; i < b.length; i++) {
      out[2 * i] = HEX[(b[i] >> 4) & 0xf];
      out[2 * i + 1] = HEX[b[i] & 0xf];
    }
    return new String(out);
  }
}
