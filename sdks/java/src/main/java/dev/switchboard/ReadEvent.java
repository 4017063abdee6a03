package dev.switchboard;

import dev.switchboard.internal.Json;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.Map;

/**
 * An event as read: the written fields and where it is. {@code value} is the parsed JSON value (Map, List, String,
 * Long, Double, Boolean or null) unless the event was written as bytes ({@code valueB64} set).
 */
public record ReadEvent(
    int partition, long offset, String timestamp, String key, Map<String, String> headers, Object value, String valueB64) {

  /** Whether the value was written as bytes. */
  public boolean isBinary() {
    return valueB64 != null;
  }

  /** The value as bytes: decoded base64, or the JSON text in UTF-8. */
  public byte[] valueBytes() {
    return valueB64 != null ? Base64.getDecoder().decode(valueB64) : Json.write(value).getBytes(StandardCharsets.UTF_8);
  }

  @SuppressWarnings("unchecked")
  static ReadEvent from(Map<String, Object> m) {
    return new ReadEvent(
        ((Number) m.get("partition")).intValue(),
        ((Number) m.get("offset")).longValue(),
        (String) m.get("timestamp"),
        (String) m.get("key"),
        m.containsKey("headers") ? (Map<String, String>) m.get("headers") : Map.of(),
        m.get("value"),
        (String) m.get("value_b64"));
  }
}
