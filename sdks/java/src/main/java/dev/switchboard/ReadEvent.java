package dev.switchboard;

import dev.switchboard.internal.Json;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.Map;

/**
 * An event as read: the written fields and where it is. A JSON value is kept as its text ({@link #valueJson()}) and
 * parsed on demand ({@link #value()}); a value written as bytes has {@code valueB64} set.
 */
public record ReadEvent(
    int partition, long offset, String timestamp, String key, Map<String, String> headers, String valueJson, String valueB64) {

  /**
   * The JSON value as objects (Map, List, String, Long, Double, Boolean or null), parsed from {@link #valueJson()}
   * at each call; null for a bytes value.
   */
  public Object value() {
    return valueJson == null ? null : Json.parse(valueJson);
  }

  /** Whether the value was written as bytes. */
  public boolean isBinary() {
    return valueB64 != null;
  }

  /** The value as bytes: decoded base64, or the JSON text in UTF-8. */
  public byte[] valueBytes() {
    return valueB64 != null ? Base64.getDecoder().decode(valueB64) : valueJson.getBytes(StandardCharsets.UTF_8);
  }

  @SuppressWarnings("unchecked")
  static ReadEvent from(Map<String, Object> m) {
    return new ReadEvent(
        ((Number) m.get("partition")).intValue(),
        ((Number) m.get("offset")).longValue(),
        (String) m.get("timestamp"),
        (String) m.get("key"),
        m.containsKey("headers") ? (Map<String, String>) m.get("headers") : Map.of(),
        m.get("value") instanceof Json.Raw r ? r.text() : null,
        (String) m.get("value_b64"));
  }
}
