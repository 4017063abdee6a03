package dev.switchboard;

import dev.switchboard.internal.Json;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;

/**
 * An event as written: a JSON value or bytes, an optional key and headers. Immutable; {@link #withKey} and
 * {@link #withHeader} give changed copies.
 */
public final class Event {
  private final String key;
  private final Map<String, String> headers;
  private final String valueJson;
  private final String valueB64;

  private Event(String key, Map<String, String> headers, String valueJson, String valueB64) {
    this.key = key;
    this.headers = headers;
    this.valueJson = valueJson;
    this.valueB64 = valueB64;
  }

  /** An event whose value is {@code value}: a Map, List, String, Number, Boolean or null, written as JSON. */
  public static Event of(Object value) {
    return new Event(null, Map.of(), Json.write(value), null);
  }

  /** An event whose value is the JSON text {@code json} (checked, kept as written). */
  public static Event json(String json) {
    return new Event(null, Map.of(), Json.Raw.of(json).text(), null);
  }

  /** An event whose value is {@code bytes}. */
  public static Event bytes(byte[] bytes) {
    return new Event(null, Map.of(), null, Base64.getEncoder().encodeToString(bytes));
  }

  /** An event whose value is bytes given as standard base64 (checked). */
  public static Event base64(String b64) {
    Base64.getDecoder().decode(b64);
    return new Event(null, Map.of(), null, b64);
  }

  public Event withKey(String key) {
    return new Event(key, headers, valueJson, valueB64);
  }

  public Event withHeader(String name, String value) {
    Map<String, String> h = new LinkedHashMap<>(headers);
    h.put(Objects.requireNonNull(name), Objects.requireNonNull(value));
    return new Event(key, Collections.unmodifiableMap(h), valueJson, valueB64);
  }

  public Event withHeaders(Map<String, String> headers) {
    return new Event(key, Collections.unmodifiableMap(new LinkedHashMap<>(headers)), valueJson, valueB64);
  }

  public String key() {
    return key;
  }

  public Map<String, String> headers() {
    return headers;
  }

  /** The value's JSON text, or null for a bytes value. */
  public String valueJson() {
    return valueJson;
  }

  /** The value as bytes: decoded base64, or the JSON text in UTF-8. */
  public byte[] valueBytes() {
    return valueB64 != null ? Base64.getDecoder().decode(valueB64) : valueJson.getBytes(StandardCharsets.UTF_8);
  }

  /** Appends this event as protocol JSON. */
  public void appendTo(StringBuilder b) {
    b.append('{');
    boolean comma = false;
    if (key != null) {
      b.append("\"key\":");
      Json.quote(b, key);
      comma = true;
    }
    if (!headers.isEmpty()) {
      if (comma) b.append(',');
      b.append("\"headers\":");
      Json.write(b, headers);
      comma = true;
    }
    if (comma) b.append(',');
    if (valueB64 != null) {
      b.append("\"value_b64\":");
      Json.quote(b, valueB64);
    } else {
      b.append("\"value\":").append(valueJson);
    }
    b.append('}');
  }

  /** The JSON array of a block's events, encoded once so that retries send the same bytes. */
  public static byte[] encode(Iterable<Event> events) {
    int guess = 2;
    if (events instanceof java.util.Collection<?> c) {
      for (Event e : events) guess += 64 + (e.valueJson != null ? e.valueJson.length() : e.valueB64.length());
      guess = Math.max(guess, 16 + c.size());
    }
    StringBuilder b = new StringBuilder(guess);
    b.append('[');
    boolean first = true;
    for (Event e : events) {
      if (!first) b.append(',');
      first = false;
      e.appendTo(b);
    }
    b.append(']');
    return b.toString().getBytes(StandardCharsets.UTF_8);
  }
}
