package dev.switchboard.internal;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A small JSON reader and writer (RFC 8259), so that the SDK needs nothing beyond the JDK. Objects read as
 * {@link LinkedHashMap}, arrays as {@link ArrayList}, integers as {@link Long} (or {@link BigInteger} past its
 * range), other numbers as {@link Double} (or {@link BigDecimal} when a double would not keep them), and the rest as
 * {@link String}, {@link Boolean} and {@code null}. Nesting is bounded.
 */
public final class Json {
  private static final int MAX_DEPTH = 256;

  private final String s;
  private final String rawKey;
  private int i;

  private Json(String s, String rawKey) {
    this.s = s;
    this.rawKey = rawKey;
  }

  /** Parses one JSON text. */
  public static Object parse(String text) {
    return parse(text, null);
  }

  /**
   * Parses one JSON text; every member named {@code rawKey} comes back as {@link Raw}, its text checked but not
   * turned into objects (for event values that the application may parse its own way, or never).
   */
  public static Object parse(String text, String rawKey) {
    Json p = new Json(text, rawKey);
    p.ws();
    Object v = p.value(0);
    p.ws();
    if (p.i != text.length()) throw p.error("trailing characters");
    return v;
  }

  /** Parses one JSON text that must be an object. */
  @SuppressWarnings("unchecked")
  public static Map<String, Object> parseObject(String text) {
    Object v = parse(text);
    if (!(v instanceof Map)) throw new IllegalArgumentException("expected a JSON object");
    return (Map<String, Object>) v;
  }

  private IllegalArgumentException error(String what) {
    return new IllegalArgumentException("invalid JSON at " + i + ": " + what);
  }

  private void ws() {
    while (i < s.length()) {
      char c = s.charAt(i);
      if (c != ' ' && c != '\n' && c != '\r' && c != '\t') return;
      i++;
    }
  }

  private Object value(int depth) {
    if (depth > MAX_DEPTH) throw error("nested too deep");
    if (i >= s.length()) throw error("unexpected end");
    char c = s.charAt(i);
    switch (c) {
      case '{':
        return object(depth);
      case '[':
        return array(depth);
      case '"':
        return string();
      case 't':
        return literal("true", Boolean.TRUE);
      case 'f':
        return literal("false", Boolean.FALSE);
      case 'n':
        return literal("null", null);
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return number();
        throw error("unexpected character '" + c + "'");
    }
  }

  /** Checks one value and moves past it without building it. */
  private void skip(int depth) {
    if (depth > MAX_DEPTH) throw error("nested too deep");
    if (i >= s.length()) throw error("unexpected end");
    char c = s.charAt(i);
    if (c == '"') {
      skipString();
    } else if (c == '{' || c == '[') {
      char close = c == '{' ? '}' : ']';
      i++;
      ws();
      if (i < s.length() && s.charAt(i) == close) {
        i++;
        return;
      }
      while (true) {
        ws();
        if (c == '{') {
          if (i >= s.length() || s.charAt(i) != '"') throw error("expected a key");
          skipString();
          ws();
          if (i >= s.length() || s.charAt(i) != ':') throw error("expected ':'");
          i++;
          ws();
        }
        skip(depth + 1);
        ws();
        if (i >= s.length()) throw error("unexpected end");
        char d = s.charAt(i++);
        if (d == close) return;
        if (d != ',') throw error("expected ',' or '" + close + "'");
      }
    } else {
      value(depth);
    }
  }

  private void skipString() {
    i++;
    while (i < s.length()) {
      char c = s.charAt(i++);
      if (c == '"') return;
      if (c == '\\') {
        if (i >= s.length()) break;
        char e = s.charAt(i++);
        if (e == 'u') {
          if (i + 4 > s.length()) break;
          for (int k = 0; k < 4; k++) {
            if (Character.digit(s.charAt(i + k), 16) < 0) throw error("bad \\u escape");
          }
          i += 4;
        } else if ("\"\\/bfnrt".indexOf(e) < 0) {
          throw error("bad escape");
        }
      } else if (c < 0x20) {
        throw error("control character in a string");
      }
    }
    throw error("unterminated string");
  }

  private Object literal(String word, Object v) {
    if (!s.startsWith(word, i)) throw error("expected " + word);
    i += word.length();
    return v;
  }

  private Map<String, Object> object(int depth) {
    Map<String, Object> m = new LinkedHashMap<>();
    i++;
    ws();
    if (i < s.length() && s.charAt(i) == '}') {
      i++;
      return m;
    }
    while (true) {
      ws();
      if (i >= s.length() || s.charAt(i) != '"') throw error("expected a key");
      String k = string();
      ws();
      if (i >= s.length() || s.charAt(i) != ':') throw error("expected ':'");
      i++;
      ws();
      if (k.equals(rawKey)) {
        int start = i;
        skip(depth + 1);
        m.put(k, new Raw(s.substring(start, i)));
      } else {
        m.put(k, value(depth + 1));
      }
      ws();
      if (i >= s.length()) throw error("unexpected end");
      char c = s.charAt(i++);
      if (c == '}') return m;
      if (c != ',') throw error("expected ',' or '}'");
    }
  }

  private List<Object> array(int depth) {
    List<Object> a = new ArrayList<>();
    i++;
    ws();
    if (i < s.length() && s.charAt(i) == ']') {
      i++;
      return a;
    }
    while (true) {
      ws();
      a.add(value(depth + 1));
      ws();
      if (i >= s.length()) throw error("unexpected end");
      char c = s.charAt(i++);
      if (c == ']') return a;
      if (c != ',') throw error("expected ',' or ']'");
    }
  }

  private String string() {
    i++;
    int start = i;
    // fast path: no escapes
    while (i < s.length()) {
      char c = s.charAt(i);
      if (c == '"') return s.substring(start, i++);
      if (c == '\\') break;
      if (c < 0x20) throw error("control character in a string");
      i++;
    }
    StringBuilder b = new StringBuilder(s.substring(start, i));
    while (i < s.length()) {
      char c = s.charAt(i++);
      if (c == '"') return b.toString();
      if (c < 0x20) throw error("control character in a string");
      if (c != '\\') {
        b.append(c);
        continue;
      }
      if (i >= s.length()) break;
      char e = s.charAt(i++);
      switch (e) {
        case '"': b.append('"'); break;
        case '\\': b.append('\\'); break;
        case '/': b.append('/'); break;
        case 'b': b.append('\b'); break;
        case 'f': b.append('\f'); break;
        case 'n': b.append('\n'); break;
        case 'r': b.append('\r'); break;
        case 't': b.append('\t'); break;
        case 'u':
          if (i + 4 > s.length()) throw error("short \\u escape");
          try {
            b.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
          } catch (NumberFormatException x) {
            throw error("bad \\u escape");
          }
          i += 4;
          break;
        default:
          throw error("bad escape \\" + e);
      }
    }
    throw error("unterminated string");
  }

  private Object number() {
    int start = i;
    if (s.charAt(i) == '-') i++;
    boolean integral = true;
    while (i < s.length()) {
      char c = s.charAt(i);
      if (c >= '0' && c <= '9') {
        i++;
      } else if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
        integral = false;
        i++;
      } else {
        break;
      }
    }
    String t = s.substring(start, i);
    try {
      if (integral) {
        if (t.length() < 19) return Long.parseLong(t);
        BigInteger b = new BigInteger(t);
        return b.bitLength() < 64 ? (Object) b.longValue() : b;
      }
      BigDecimal d = new BigDecimal(t);
      double v = d.doubleValue();
      return Double.isFinite(v) && new BigDecimal(v).compareTo(d) == 0 ? (Object) v : d;
    } catch (NumberFormatException x) {
      throw error("bad number " + t);
    }
  }

  /** Writes a value as compact JSON text. */
  public static String write(Object v) {
    StringBuilder b = new StringBuilder();
    write(b, v);
    return b.toString();
  }

  /** Appends a value as compact JSON text. Maps and lists nest; {@link Raw} is written as is. */
  public static void write(StringBuilder b, Object v) {
    if (v == null) {
      b.append("null");
    } else if (v instanceof String) {
      quote(b, (String) v);
    } else if (v instanceof Raw) {
      b.append(((Raw) v).text());
    } else if (v instanceof Boolean || v instanceof Long || v instanceof Integer || v instanceof Short
        || v instanceof Byte || v instanceof BigInteger) {
      b.append(v);
    } else if (v instanceof Double || v instanceof Float) {
      double d = ((Number) v).doubleValue();
      if (!Double.isFinite(d)) throw new IllegalArgumentException("JSON has no " + d);
      if (d == Math.rint(d) && Math.abs(d) < 1e15) b.append((long) d).append(".0");
      else b.append(d);
    } else if (v instanceof BigDecimal) {
      b.append(((BigDecimal) v).toString());
    } else if (v instanceof Map) {
      b.append('{');
      boolean first = true;
      for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
        if (!first) b.append(',');
        first = false;
        quote(b, String.valueOf(e.getKey()));
        b.append(':');
        write(b, e.getValue());
      }
      b.append('}');
    } else if (v instanceof Iterable) {
      b.append('[');
      boolean first = true;
      for (Object o : (Iterable<?>) v) {
        if (!first) b.append(',');
        first = false;
        write(b, o);
      }
      b.append(']');
    } else {
      throw new IllegalArgumentException("cannot write a " + v.getClass().getName() + " as JSON");
    }
  }

  /** Appends a JSON string literal. */
  public static void quote(StringBuilder b, String s) {
    b.append('"');
    int n = s.length();
    int k = 0;
    // most strings need no escape: find the first that does, copy the rest in bulk
    while (k < n) {
      char c = s.charAt(k);
      if (c < 0x20 || c == '"' || c == '\\') break;
      k++;
    }
    if (k == n) {
      b.append(s).append('"');
      return;
    }
    int from = 0;
    for (; k < n; k++) {
      char c = s.charAt(k);
      String esc = null;
      if (c == '"') esc = "\\\"";
      else if (c == '\\') esc = "\\\\";
      else if (c == '\n') esc = "\\n";
      else if (c == '\r') esc = "\\r";
      else if (c == '\t') esc = "\\t";
      else if (c < 0x20) esc = String.format("\\u%04x", (int) c);
      if (esc != null) {
        b.append(s, from, k).append(esc);
        from = k + 1;
      }
    }
    b.append(s, from, s.length()).append('"');
  }

  /** JSON text to be written as is (it was checked when made). */
  public record Raw(String text) {
    /** Checks {@code text} and keeps it. */
    public static Raw of(String text) {
      parse(text);
      return new Raw(text);
    }
  }
}
