package dev.switchboard.conformance;

import dev.switchboard.Batch;
import dev.switchboard.Compression;
import dev.switchboard.Event;
import dev.switchboard.Gap;
import dev.switchboard.ReadEvent;
import dev.switchboard.Reader;
import dev.switchboard.Signing;
import dev.switchboard.SwitchboardClient;
import dev.switchboard.SwitchboardException;
import dev.switchboard.Writer;
import dev.switchboard.internal.Json;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** The conformance driver of the Java SDK: commands in, results out, one JSON line each (conformance/README.md). */
public final class Driver {
  private SwitchboardClient client;
  private final Map<String, Writer> writers = new HashMap<>();
  private final Map<String, Reader> readers = new HashMap<>();

  static final class Fail extends RuntimeException {
    private static final long serialVersionUID = 1L;
    final String code;

    Fail(String message, String code) {
      super(message);
      this.code = code;
    }
  }

  public static void main(String[] args) throws Exception {
    Driver d = new Driver();
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
    String line;
    while ((line = in.readLine()) != null) {
      Map<String, Object> a = Map.of();
      Map<String, Object> answer;
      try {
        a = Json.parseObject(line);
        answer = new LinkedHashMap<>();
        answer.put("ok", true);
        answer.putAll(d.handle((String) a.get("cmd"), a));
      } catch (Exception e) {
        answer = new LinkedHashMap<>();
        answer.put("ok", false);
        answer.put("error", errorValue(e));
      }
      answer.put("id", a.get("id"));
      out.println(Json.write(answer));
      out.flush();
    }
    if (d.client != null) d.client.close();
  }

  static Map<String, Object> errorValue(Exception e) {
    Map<String, Object> m = new LinkedHashMap<>();
    if (e instanceof SwitchboardException s) {
      m.put("code", s.code());
      m.put("status", s.status());
      m.put("retryable", s.retryable());
      m.put("request_id", s.requestId());
    } else {
      m.put("code", e instanceof Fail f ? f.code : null);
      m.put("retryable", false);
    }
    m.put("message", String.valueOf(e));
    return m;
  }

  private SwitchboardClient c() {
    if (client == null) throw new Fail("connect first", null);
    return client;
  }

  @SuppressWarnings("unchecked")
  static List<Event> events(Object v) {
    List<Event> out = new ArrayList<>();
    for (Object o : (List<Object>) v) {
      Map<String, Object> m = (Map<String, Object>) o;
      Event e = m.containsKey("value_b64") ? Event.base64((String) m.get("value_b64")) : Event.of(m.get("value"));
      if (m.get("key") != null) e = e.withKey((String) m.get("key"));
      if (m.get("headers") != null) e = e.withHeaders((Map<String, String>) m.get("headers"));
      out.add(e);
    }
    return out;
  }

  static Map<String, Object> eventValue(ReadEvent e) {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("partition", e.partition());
    m.put("offset", e.offset());
    m.put("timestamp", e.timestamp());
    if (e.key() != null) m.put("key", e.key());
    if (!e.headers().isEmpty()) m.put("headers", e.headers());
    if (e.isBinary()) m.put("value_b64", e.valueB64());
    else m.put("value", e.value());
    return m;
  }

  static long num(Map<String, Object> a, String k, long dflt) {
    return a.get(k) instanceof Number n ? n.longValue() : dflt;
  }

  Map<String, Object> handle(String cmd, Map<String, Object> a) throws Exception {
    switch (cmd == null ? "" : cmd) {
      case "hello":
        return Map.of("sdk", "java", "version", "0.1.0");
      case "connect": {
        String comp = a.get("compression") == null ? "none" : (String) a.get("compression");
        if (!comp.equals("none") && !comp.equals("gzip")) throw new Fail(comp + " is not in the JDK", "unsupported");
        String token = (String) a.get("token");
        SwitchboardClient.Builder b = SwitchboardClient.builder((String) a.get("url"))
            .compression(comp.equals("gzip") ? Compression.GZIP : Compression.NONE);
        if (Boolean.TRUE.equals(a.get("token_callback"))) b.tokenSupplier(() -> token);
        else b.token(token);
        if (a.get("ca_file") != null) b.caCertificate(Path.of((String) a.get("ca_file")));
        if (client != null) client.close();
        client = b.build();
        return Map.of();
      }
      case "sign":
        return Map.of("header", Signing.sign((String) a.get("secret"), num(a, "t", 0), (String) a.get("method"),
            (String) a.get("path"), ((String) a.get("body")).getBytes(StandardCharsets.UTF_8)));
      case "create_stream": {
        Integer p = a.get("partitions") instanceof Number n ? n.intValue() : null;
        Long rb = a.get("retention_bytes") instanceof Number n ? n.longValue() : null;
        var r = c().createStream((String) a.get("name"), new SwitchboardClient.StreamSettings(p, null, rb, null));
        return Map.of("created", r.created());
      }
      case "publish": {
        List<Map<String, Object>> offs = new ArrayList<>();
        for (var o : c().publish((String) a.get("stream"), events(a.get("events")))) {
          offs.add(Map.of("partition", o.partition(), "offset", o.offset()));
        }
        return Map.of("offsets", offs);
      }
      case "writer_open": {
        var o = Writer.Options.defaults().withWindow((int) num(a, "window", 8));
        if (a.get("producer") != null) o = o.withProducer((String) a.get("producer"));
        writers.put((String) a.get("writer"), Writer.open(c(), (String) a.get("stream"), o));
        return Map.of();
      }
      case "writer_send":
        return Map.of("block", writer(a).send(events(a.get("events"))));
      case "writer_flush":
        return Map.of("durable_through", writer(a).flush());
      case "writer_close": {
        Writer w = writer(a);
        writers.remove((String) a.get("writer"));
        return Map.of("durable_through", w.closeAndFlush());
      }
      case "reader_open": {
        var o = Reader.Options.defaults();
        if (a.get("max_events") instanceof Number n) o = o.withMaxEvents(n.intValue());
        readers.put((String) a.get("reader"), Reader.open(c(), (String) a.get("stream"), (String) a.get("from"), o));
        return Map.of();
      }
      case "reader_read":
        return read(reader(a), a);
      case "reader_cursor":
        return Map.of("cursor", reader(a).cursor());
      case "reader_close": {
        Reader r = reader(a);
        readers.remove((String) a.get("reader"));
        return Map.of("cursor", r.closeAndGetCursor());
      }
      case "bench":
        return bench(a);
      default:
        throw new Fail("unknown command " + cmd, "unsupported");
    }
  }

  private Writer writer(Map<String, Object> a) {
    Writer w = writers.get((String) a.get("writer"));
    if (w == null) throw new Fail("no such writer", null);
    return w;
  }

  private Reader reader(Map<String, Object> a) {
    Reader r = readers.get((String) a.get("reader"));
    if (r == null) throw new Fail("no such reader", null);
    return r;
  }

  /**
   * Batches until {@code count} events or {@code timeout_ms}; each held {@code hold_ms} before its ack; a batch whose
   * ack did not move the cursor (session lost) comes again and is not counted.
   */
  static Map<String, Object> read(Reader r, Map<String, Object> a) throws InterruptedException {
    long count = num(a, "count", 1);
    long deadline = System.currentTimeMillis() + num(a, "timeout_ms", 10_000);
    long hold = num(a, "hold_ms", 0);
    List<Object> events = new ArrayList<>();
    List<Object> gaps = new ArrayList<>();
    long redelivered = 0;
    while (events.size() < count) {
      long left = deadline - System.currentTimeMillis();
      if (left <= 0) break;
      r.setWaitMs(Math.min(left, 1000));
      Batch b = r.next();
      if (b.batch() == 0) continue;
      Thread.sleep(hold);
      String before = r.cursor();
      if (r.ack().equals(before)) {
        redelivered++;
        continue;
      }
      for (ReadEvent e : b.events()) events.add(eventValue(e));
      for (Gap g : b.gaps()) gaps.add(Map.of("partition", g.partition(), "from", g.from(), "to", g.to()));
    }
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("events", events);
    m.put("gaps", gaps);
    m.put("redelivered", redelivered);
    m.put("cursor", r.cursor());
    return m;
  }

  /** Publishes {@code events} events of about {@code size} bytes in blocks through a writer, then consumes them. */
  static Map<String, Object> bench(Map<String, Object> a) {
    long total = num(a, "events", 100_000);
    int block = (int) num(a, "block", 500);
    String pad = "x".repeat((int) Math.max(num(a, "size", 1024) - 40, 0));
    String stream = (String) a.get("stream");
    try (SwitchboardClient c = SwitchboardClient.builder((String) a.get("url")).token((String) a.get("token"))
        .acceptCompressed(false).build()) {
      c.createStream(stream, SwitchboardClient.StreamSettings.partitions(4));
      long started = System.nanoTime();
      try (Writer w = Writer.open(c, stream, Writer.Options.defaults())) {
        for (long sent = 0; sent < total; ) {
          int n = (int) Math.min(block, total - sent);
          List<Event> events = new ArrayList<>(n);
          for (long i = sent; i < sent + n; i++) {
            Map<String, Object> v = new LinkedHashMap<>();
            v.put("i", i);
            v.put("pad", pad);
            events.add(Event.of(v).withKey("k" + (i % 64)));
          }
          w.send(events);
          sent += n;
        }
      }
      double publish = total / ((System.nanoTime() - started) / 1e9);
      started = System.nanoTime();
      try (Reader r = Reader.open(c, stream, "earliest", Reader.Options.defaults().withMaxEvents(block))) {
        for (long got = 0; got < total; ) {
          got += r.next().events().size();
          r.ack();
        }
      }
      double consume = total / ((System.nanoTime() - started) / 1e9);
      return Map.of("publish_events_per_s", publish, "consume_events_per_s", consume);
    }
  }
}
