package dev.switchboard;

import dev.switchboard.internal.Json;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.SecureRandom;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import java.util.zip.GZIPInputStream;
import java.util.zip.GZIPOutputStream;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509TrustManager;

/**
 * A connection to a Switchboard server: one typed method per endpoint of docs/PROTOCOL.md, each blocking and as a
 * {@link CompletableFuture} ({@code ...Async}). Session calls are signed with the session's secret. Thread-safe;
 * share one per process.
 */
public final class SwitchboardClient implements AutoCloseable {
  private static final int COMPRESS_FROM = 1024;
  private static final SecureRandom RANDOM = new SecureRandom();

  private final HttpClient http;
  private final String base;
  private final Supplier<String> token;
  private final Compression compression;
  private final boolean acceptCompressed;
  private final Duration timeout;
  final ScheduledExecutorService scheduler;

  private SwitchboardClient(Builder b) {
    this.base = b.url.replaceAll("/+$", "");
    this.token = Objects.requireNonNull(b.token, "a token or token supplier is required");
    this.compression = b.compression;
    this.acceptCompressed = b.acceptCompressed;
    this.timeout = b.timeout;
    HttpClient.Builder h = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5));
    h.version(base.startsWith("https:") ? HttpClient.Version.HTTP_2 : HttpClient.Version.HTTP_1_1);
    if (b.sslContext != null) h.sslContext(b.sslContext);
    this.http = h.build();
    this.scheduler = Executors.newSingleThreadScheduledExecutor(r -> {
      Thread t = new Thread(r, "switchboard-timer");
      t.setDaemon(true);
      return t;
    });
  }

  /** A builder for the server at {@code url} (like {@code http://127.0.0.1:7700}). */
  public static Builder builder(String url) {
    return new Builder(url);
  }

  /** How a client connects. */
  public static final class Builder {
    private final String url;
    private Supplier<String> token;
    private SSLContext sslContext;
    private Compression compression = Compression.NONE;
    private boolean acceptCompressed = true;
    private Duration timeout = Duration.ofSeconds(60);

    private Builder(String url) {
      if (!url.startsWith("http://") && !url.startsWith("https://")) {
        throw new IllegalArgumentException("not an http(s) URL: " + url);
      }
      this.url = url;
    }

    /** A static bearer token. */
    public Builder token(String token) {
      Objects.requireNonNull(token);
      this.token = () -> token;
      return this;
    }

    /** A bearer token per call, such as an OAuth2 token manager's current access token. */
    public Builder tokenSupplier(Supplier<String> supplier) {
      this.token = Objects.requireNonNull(supplier);
      return this;
    }

    /** Trusts the CA certificates in a PEM file besides the system roots. */
    public Builder caCertificate(Path pem) {
      this.sslContext = trusting(pem);
      return this;
    }

    /** The TLS context to use (replaces {@link #caCertificate}). */
    public Builder sslContext(SSLContext ctx) {
      this.sslContext = ctx;
      return this;
    }

    /** Compresses request bodies of 1 KiB and more. */
    public Builder compression(Compression c) {
      this.compression = Objects.requireNonNull(c);
      return this;
    }

    /** Asks for gzip answers (default true). */
    public Builder acceptCompressed(boolean yes) {
      this.acceptCompressed = yes;
      return this;
    }

    /** Per-call timeout, besides a read's own wait (default 60 s). */
    public Builder timeout(Duration timeout) {
      this.timeout = timeout;
      return this;
    }

    public SwitchboardClient build() {
      return new SwitchboardClient(this);
    }
  }

  static SSLContext trusting(Path pem) {
    try (InputStream in = Files.newInputStream(pem)) {
      KeyStore ks = KeyStore.getInstance(KeyStore.getDefaultType());
      ks.load(null, null);
      int n = 0;
      for (Certificate c : CertificateFactory.getInstance("X.509").generateCertificates(in)) {
        ks.setCertificateEntry("custom-" + n++, c);
      }
      if (n == 0) throw new IllegalArgumentException("no certificate in " + pem);
      TrustManagerFactory system = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
      system.init((KeyStore) null);
      for (TrustManager tm : system.getTrustManagers()) {
        if (tm instanceof X509TrustManager x) {
          for (X509Certificate c : x.getAcceptedIssuers()) ks.setCertificateEntry("system-" + n++, c);
        }
      }
      TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
      tmf.init(ks);
      SSLContext ctx = SSLContext.getInstance("TLS");
      ctx.init(null, tmf.getTrustManagers(), null);
      return ctx;
    } catch (IOException | GeneralSecurityException e) {
      throw new IllegalArgumentException("cannot read the CA file " + pem + ": " + e.getMessage(), e);
    }
  }

  @Override
  public void close() {
    scheduler.shutdownNow();
  }

  /** A decoded answer. */
  record Answer(int status, Object value) {}

  private static String name(String s) {
    return URLEncoder.encode(s, StandardCharsets.UTF_8).replace("+", "%20");
  }

  private static byte[] gzip(byte[] body) {
    ByteArrayOutputStream out = new ByteArrayOutputStream(body.length / 4 + 64);
    try (GZIPOutputStream g = new GZIPOutputStream(out)) {
      g.write(body);
    } catch (IOException e) {
      throw new IllegalStateException(e);
    }
    return out.toByteArray();
  }

  private static byte[] gunzip(byte[] body) throws IOException {
    try (GZIPInputStream g = new GZIPInputStream(new ByteArrayInputStream(body))) {
      return g.readAllBytes();
    }
  }

  /** One call, ready to send: its request and how its answer maps to a result. */
  private record Call<T>(HttpRequest request, String what, java.util.function.Function<Answer, T> map) {}

  /** Builds a call (signing it with the session's secret when there is one). */
  private <T> Call<T> call(String method, String path, byte[] body, Session session, Map<String, String> headers,
      Duration callTimeout, java.util.function.Function<Answer, T> map) {
    HttpRequest.Builder r = HttpRequest.newBuilder(URI.create(base + path)).timeout(callTimeout == null ? timeout : callTimeout);
    String t = token.get();
    if (t == null) throw new IllegalStateException("the token supplier gave null");
    r.header("Authorization", "Bearer " + t.trim());
    if (acceptCompressed) r.header("Accept-Encoding", "gzip");
    byte[] data = body == null ? new byte[0] : body;
    if (body != null) {
      r.header("Content-Type", "application/json");
      if (compression == Compression.GZIP && data.length >= COMPRESS_FROM) {
        data = gzip(data);
        r.header("Content-Encoding", "gzip");
      }
    }
    if (session != null) {
      r.header(Signing.HEADER, Signing.sign(session.secret(), System.currentTimeMillis(), method, path, data));
    }
    if (headers != null) headers.forEach(r::header);
    r.method(method, body == null ? HttpRequest.BodyPublishers.noBody() : HttpRequest.BodyPublishers.ofByteArray(data));
    return new Call<>(r.build(), method + " " + path, map);
  }

  /** Sends a call on this thread (the blocking API: no hop to the client's executor). */
  private <T> T run(Call<T> c) {
    HttpResponse<byte[]> resp;
    try {
      resp = http.send(c.request(), HttpResponse.BodyHandlers.ofByteArray());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new SwitchboardException.Transport(c.what() + ": interrupted", e);
    } catch (IOException e) {
      throw new SwitchboardException.Transport(c.what() + ": " + e, e);
    }
    return c.map().apply(decode(resp));
  }

  /** Sends a call without blocking; the future fails with the {@link SwitchboardException} the call ended in. */
  private <T> CompletableFuture<T> runAsync(Call<T> c) {
    return http.sendAsync(c.request(), HttpResponse.BodyHandlers.ofByteArray()).handle((resp, err) -> {
      if (err != null) {
        Throwable cause = unwrap(err);
        throw new SwitchboardException.Transport(c.what() + ": " + cause, cause);
      }
      return c.map().apply(decode(resp));
    });
  }

  /** A call built and sent without blocking; a failure to build it fails the future. */
  private <T> CompletableFuture<T> async(Supplier<Call<T>> build) {
    Call<T> c;
    try {
      c = build.get();
    } catch (RuntimeException e) {
      return CompletableFuture.failedFuture(e);
    }
    return runAsync(c);
  }

  private static Answer decode(HttpResponse<byte[]> resp) {
    String rid = resp.headers().firstValue("x-request-id").orElse(null);
    byte[] bytes = resp.body();
    Object value = null;
    try {
      if (resp.headers().firstValue("content-encoding").map(e -> e.equalsIgnoreCase("gzip")).orElse(false)) {
        bytes = gunzip(bytes);
      }
      // event values stay JSON text until the application asks (ReadEvent.value)
      if (bytes.length > 0) value = Json.parse(new String(bytes, StandardCharsets.UTF_8), "value");
    } catch (IOException | IllegalArgumentException e) {
      throw new SwitchboardException.Protocol(
          "status " + resp.statusCode() + " with a body that is not JSON: " + e.getMessage(), resp.statusCode(), rid);
    }
    if (resp.statusCode() >= 400) throw apiError(resp.statusCode(), value, rid);
    return new Answer(resp.statusCode(), value);
  }

  private static SwitchboardException apiError(int status, Object body, String rid) {
    if (body instanceof Map<?, ?> m && m.get("error") instanceof Map<?, ?> e && e.get("code") instanceof String code) {
      return new SwitchboardException.Api(
          status,
          code,
          String.valueOf(e.get("message")),
          Boolean.TRUE.equals(e.get("retryable")),
          rid,
          e.get("retry_after_ms") instanceof Number n ? n.longValue() : null,
          e.get("fenced_by_epoch") instanceof Number n ? n.longValue() : null);
    }
    return new SwitchboardException.Protocol("status " + status + " without an error body", status, rid);
  }

  private static Throwable unwrap(Throwable t) {
    while (t instanceof CompletionException && t.getCause() != null) t = t.getCause();
    return t;
  }

  private <T> Call<T> json(String method, String path, Object body, java.util.function.Function<Answer, T> map) {
    byte[] b = body == null ? null : Json.write(body).getBytes(StandardCharsets.UTF_8);
    return call(method, path, b, null, null, null, map);
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> obj(Object v) {
    if (v instanceof Map<?, ?>) return (Map<String, Object>) v;
    throw new SwitchboardException.Protocol("expected a JSON object, got " + v, 0, null);
  }

  private static long num(Map<String, Object> m, String k) {
    if (m.get(k) instanceof Number n) return n.longValue();
    throw new SwitchboardException.Protocol("answer without `" + k + "`", 0, null);
  }

  // streams

  /** Stream settings at creation; null fields are left to the server. */
  public record StreamSettings(Integer partitions, Long retentionMs, Long retentionBytes, Boolean encryptKeys) {
    public static StreamSettings partitions(int n) {
      return new StreamSettings(n, null, null, null);
    }
  }

  /** {@code POST /v1/streams}: the stream's description, and whether it was created. */
  public record Created(Map<String, Object> stream, boolean created) {}

  private Call<Created> createStreamCall(String stream, StreamSettings s) {
    Map<String, Object> req = new LinkedHashMap<>();
    req.put("name", stream);
    if (s != null) {
      if (s.partitions() != null) req.put("partitions", s.partitions());
      if (s.retentionMs() != null) req.put("retention_ms", s.retentionMs());
      if (s.retentionBytes() != null) req.put("retention_bytes", s.retentionBytes());
      if (s.encryptKeys() != null) req.put("encrypt_keys", s.encryptKeys());
    }
    return json("POST", "/v1/streams", req, a -> new Created(obj(a.value()), a.status() == 201));
  }

  public Created createStream(String stream, StreamSettings s) {
    return run(createStreamCall(stream, s));
  }

  public CompletableFuture<Created> createStreamAsync(String stream, StreamSettings s) {
    return async(() -> createStreamCall(stream, s));
  }

  @SuppressWarnings("unchecked")
  private Call<List<Map<String, Object>>> listStreamsCall() {
    return json("GET", "/v1/streams", null, a -> (List<Map<String, Object>>) obj(a.value()).get("streams"));
  }

  /** {@code GET /v1/streams}. */
  public List<Map<String, Object>> listStreams() {
    return run(listStreamsCall());
  }

  public CompletableFuture<List<Map<String, Object>>> listStreamsAsync() {
    return async(this::listStreamsCall);
  }

  /** {@code GET /v1/streams/{name}}: settings and each partition's start and end offsets. */
  public Map<String, Object> describeStream(String stream) {
    return run(json("GET", "/v1/streams/" + name(stream), null, a -> obj(a.value())));
  }

  public CompletableFuture<Map<String, Object>> describeStreamAsync(String stream) {
    return async(() -> json("GET", "/v1/streams/" + name(stream), null, a -> obj(a.value())));
  }

  /** {@code DELETE /v1/streams/{name}}. */
  public void deleteStream(String stream) {
    run(json("DELETE", "/v1/streams/" + name(stream), null, a -> null));
  }

  public CompletableFuture<Void> deleteStreamAsync(String stream) {
    return async(() -> json("DELETE", "/v1/streams/" + name(stream), null, a -> (Void) null));
  }

  /** Where a published event landed. */
  public record Offset(int partition, long offset) {}

  private Supplier<Call<List<Offset>>> publishCalls(String stream, List<Event> events, String idempotencyKey) {
    String key = idempotencyKey != null ? idempotencyKey : HexFormat.of().formatHex(randomBytes());
    byte[] enc = Event.encode(events);
    byte[] body = new byte[enc.length + 11];
    System.arraycopy("{\"events\":".getBytes(StandardCharsets.UTF_8), 0, body, 0, 10);
    System.arraycopy(enc, 0, body, 10, enc.length);
    body[body.length - 1] = '}';
    // each attempt is built afresh: a token supplier may give a newer token
    return () -> call("POST", "/v1/streams/" + name(stream) + "/events", body, null, Map.of("Idempotency-Key", key), null, a -> {
      List<Offset> out = new ArrayList<>();
      for (Object o : (List<?>) obj(a.value()).get("offsets")) {
        Map<String, Object> m = obj(o);
        out.add(new Offset((int) num(m, "partition"), num(m, "offset")));
      }
      return out;
    });
  }

  /**
   * {@code POST /v1/streams/{name}/events}, answered once durable; the offsets in request order. Safe to repeat:
   * without an idempotency key one is generated, and transport failures and retryable errors are retried under it
   * (honouring {@code retry_after_ms}), so each event is stored once even when an answer is lost.
   */
  public List<Offset> publish(String stream, List<Event> events, String idempotencyKey) {
    Supplier<Call<List<Offset>>> calls = publishCalls(stream, events, idempotencyKey);
    Backoff b = Backoff.defaults();
    while (true) {
      try {
        return run(calls.get());
      } catch (SwitchboardException e) {
        b.retryOrThrow(e);
      }
    }
  }

  public List<Offset> publish(String stream, List<Event> events) {
    return publish(stream, events, null);
  }

  public CompletableFuture<List<Offset>> publishAsync(String stream, List<Event> events, String idempotencyKey) {
    Supplier<Call<List<Offset>>> calls;
    try {
      calls = publishCalls(stream, events, idempotencyKey);
    } catch (RuntimeException e) {
      return CompletableFuture.failedFuture(e);
    }
    CompletableFuture<List<Offset>> out = new CompletableFuture<>();
    attempt(() -> async(calls), Backoff.defaults(), out);
    return out;
  }

  private static byte[] randomBytes() {
    byte[] b = new byte[16];
    RANDOM.nextBytes(b);
    return b;
  }

  private <T> void attempt(Supplier<CompletableFuture<T>> call, Backoff backoff, CompletableFuture<T> out) {
    call.get().whenComplete((v, err) -> {
      if (err == null) {
        out.complete(v);
        return;
      }
      Throwable t = unwrap(err);
      if (!(t instanceof SwitchboardException e)) {
        out.completeExceptionally(t);
        return;
      }
      long delay;
      try {
        delay = backoff.delayOrThrow(e);
      } catch (SwitchboardException x) {
        out.completeExceptionally(x);
        return;
      }
      scheduler.schedule(() -> attempt(call, backoff, out), delay, TimeUnit.MILLISECONDS);
    });
  }

  // sessions

  /** An allocation answer. {@code cursor} is set for readers, {@code lastBlock} for producers. */
  public record Allocated(String session, String secret, String mode, String stream, long leaseMs, String node,
      String cursor, Long lastBlock) {
    public Session toSession() {
      return new Session(session, secret, leaseMs);
    }
  }

  private Call<Allocated> allocateCall(String stream, String mode, String cursor, List<Integer> partitions, String producer) {
    Map<String, Object> req = new LinkedHashMap<>();
    req.put("stream", stream);
    req.put("mode", mode);
    if (cursor != null) req.put("cursor", cursor);
    if (partitions != null) req.put("partitions", partitions);
    if (producer != null) req.put("producer", producer);
    return json("POST", "/v1/sessions", req, a -> {
      Map<String, Object> m = obj(a.value());
      return new Allocated((String) m.get("session"), (String) m.get("secret"), (String) m.get("mode"),
          (String) m.get("stream"), m.get("lease_ms") instanceof Number n ? n.longValue() : 30_000,
          (String) m.get("node"), (String) m.get("cursor"),
          m.get("last_block") instanceof Number n ? n.longValue() : null);
    });
  }

  /** {@code POST /v1/sessions}; {@code mode} is "read" or "write"; other arguments may be null. */
  public Allocated allocate(String stream, String mode, String cursor, List<Integer> partitions, String producer) {
    return run(allocateCall(stream, mode, cursor, partitions, producer));
  }

  public CompletableFuture<Allocated> allocateAsync(
      String stream, String mode, String cursor, List<Integer> partitions, String producer) {
    return async(() -> allocateCall(stream, mode, cursor, partitions, producer));
  }

  private <T> Call<T> on(String method, Session s, String op, byte[] body, Duration t,
      java.util.function.Function<Map<String, Object>, T> map) {
    return call(method, "/v1/sessions/" + name(s.id()) + op, body, s, null, t,
        a -> map.apply(a.value() == null ? Map.of() : obj(a.value())));
  }

  /** {@code GET /v1/sessions/{id}}: the heartbeat. */
  public Map<String, Object> sessionInfo(Session s) {
    return run(on("GET", s, "", null, null, m -> m));
  }

  public CompletableFuture<Map<String, Object>> sessionInfoAsync(Session s) {
    return async(() -> on("GET", s, "", null, null, m -> m));
  }

  private Call<Batch> readCall(Session s, Integer maxEvents, Long maxBytes, Long waitMs) {
    Map<String, Object> req = new LinkedHashMap<>();
    if (maxEvents != null) req.put("max_events", maxEvents);
    if (maxBytes != null) req.put("max_bytes", maxBytes);
    if (waitMs != null) req.put("wait_ms", waitMs);
    Duration t = timeout.plusMillis(waitMs == null ? 0 : waitMs);
    return on("POST", s, "/read", Json.write(req).getBytes(StandardCharsets.UTF_8), t, m -> {
      List<?> raw = (List<?>) m.get("events");
      List<ReadEvent> events = new ArrayList<>(raw.size());
      for (Object o : raw) events.add(ReadEvent.from(obj(o)));
      List<Gap> gaps = new ArrayList<>();
      if (m.get("gaps") instanceof List<?> g) {
        for (Object o : g) {
          Map<String, Object> x = obj(o);
          gaps.add(new Gap((int) num(x, "partition"), num(x, "from"), num(x, "to")));
        }
      }
      return new Batch(num(m, "batch"), events, (String) m.get("cursor"), gaps);
    });
  }

  /** {@code POST /v1/sessions/{id}/read}; null limits are left to the server. */
  public Batch read(Session s, Integer maxEvents, Long maxBytes, Long waitMs) {
    return run(readCall(s, maxEvents, maxBytes, waitMs));
  }

  public CompletableFuture<Batch> readAsync(Session s, Integer maxEvents, Long maxBytes, Long waitMs) {
    return async(() -> readCall(s, maxEvents, maxBytes, waitMs));
  }

  private Call<String> ackCall(Session s, long batch) {
    return on("POST", s, "/ack", ("{\"batch\":" + batch + "}").getBytes(StandardCharsets.UTF_8), null,
        m -> (String) m.get("cursor"));
  }

  /** {@code POST /v1/sessions/{id}/ack}; the cursor after the batch. */
  public String ack(Session s, long batch) {
    return run(ackCall(s, batch));
  }

  public CompletableFuture<String> ackAsync(Session s, long batch) {
    return async(() -> ackCall(s, batch));
  }

  private Call<Long> writeCall(Session s, long block, byte[] eventsJson) {
    byte[] head = ("{\"block\":" + block + ",\"events\":").getBytes(StandardCharsets.UTF_8);
    byte[] body = new byte[head.length + eventsJson.length + 1];
    System.arraycopy(head, 0, body, 0, head.length);
    System.arraycopy(eventsJson, 0, body, head.length, eventsJson.length);
    body[body.length - 1] = '}';
    return on("POST", s, "/write", body, null, m -> num(m, "events"));
  }

  /** {@code POST /v1/sessions/{id}/write} with the events' JSON array ({@link Event#encode}). */
  public long write(Session s, long block, byte[] eventsJson) {
    return run(writeCall(s, block, eventsJson));
  }

  public CompletableFuture<Long> writeAsync(Session s, long block, byte[] eventsJson) {
    return async(() -> writeCall(s, block, eventsJson));
  }

  /** A commit's answer: {@code status} is "scheduled" or "durable". */
  public record Committed(long block, String status, List<Map<String, Object>> offsets) {
    public boolean durable() {
      return "durable".equals(status);
    }
  }

  @SuppressWarnings("unchecked")
  private Call<Committed> commitCall(Session s, long block, boolean durable) {
    byte[] body = ("{\"block\":" + block + ",\"durable\":" + durable + "}").getBytes(StandardCharsets.UTF_8);
    return on("POST", s, "/commit", body, null, m -> new Committed(num(m, "block"), (String) m.get("status"),
        m.get("offsets") instanceof List<?> l ? (List<Map<String, Object>>) l : List.of()));
  }

  /** {@code POST /v1/sessions/{id}/commit}. */
  public Committed commit(Session s, long block, boolean durable) {
    return run(commitCall(s, block, durable));
  }

  public CompletableFuture<Committed> commitAsync(Session s, long block, boolean durable) {
    return async(() -> commitCall(s, block, durable));
  }

  /** {@code DELETE /v1/sessions/{id}}. */
  public Map<String, Object> dispose(Session s) {
    return run(on("DELETE", s, "", null, null, m -> m));
  }

  public CompletableFuture<Map<String, Object>> disposeAsync(Session s) {
    return async(() -> on("DELETE", s, "", null, null, m -> m));
  }

  /**
   * {@code GET /readyz}: whether the node serves (false while it drains, while its store is out of reach, or, on an
   * API node, while no backend serves).
   */
  public boolean ready() {
    HttpRequest r = HttpRequest.newBuilder(URI.create(base + "/readyz")).timeout(timeout).GET().build();
    HttpResponse<byte[]> resp;
    try {
      resp = http.send(r, HttpResponse.BodyHandlers.ofByteArray());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new SwitchboardException.Transport("GET /readyz: interrupted", e);
    } catch (IOException e) {
      throw new SwitchboardException.Transport("GET /readyz: " + e, e);
    }
    if (resp.statusCode() != 200 && resp.statusCode() != 503) {
      throw new SwitchboardException.Protocol("/readyz answered " + resp.statusCode(), resp.statusCode(),
          resp.headers().firstValue("x-request-id").orElse(null));
    }
    return resp.statusCode() == 200;
  }

  /** {@code GET /v1/openapi.json}: the contract as OpenAPI 3.1. */
  public Map<String, Object> openapi() {
    return run(json("GET", "/v1/openapi.json", null, a -> obj(a.value())));
  }

  /** Disposes a session, best effort: its lease ends it anyway. */
  public void disposeQuietly(Session s) {
    try {
      dispose(s);
    } catch (SwitchboardException ignored) {
      // the lease ends it
    }
  }

  /** {@code GET /v1/config}: the node's effective configuration, secrets redacted (needs {@code switchboard:admin}). */
  public Map<String, Object> config() {
    return run(json("GET", "/v1/config", null, a -> obj(a.value())));
  }

  public CompletableFuture<Map<String, Object>> configAsync() {
    return async(() -> json("GET", "/v1/config", null, a -> obj(a.value())));
  }

  /** {@code GET /v1/cluster}. */
  public Map<String, Object> cluster() {
    return run(json("GET", "/v1/cluster", null, a -> obj(a.value())));
  }

  public CompletableFuture<Map<String, Object>> clusterAsync() {
    return async(() -> json("GET", "/v1/cluster", null, a -> obj(a.value())));
  }
}
