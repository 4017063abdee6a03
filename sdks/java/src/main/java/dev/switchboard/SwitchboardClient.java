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
import java.util.concurrent.ExecutionException;
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

  /**
   * Sends one call: the status and the decoded JSON answer, or a failed future with the {@link SwitchboardException}
   * the call ended in.
   */
  CompletableFuture<Answer> send(
      String method, String path, byte[] body, Session session, Map<String, String> headers, Duration callTimeout) {
    HttpRequest.Builder r;
    try {
      r = HttpRequest.newBuilder(URI.create(base + path)).timeout(callTimeout == null ? timeout : callTimeout);
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
    } catch (RuntimeException e) {
      return CompletableFuture.failedFuture(e);
    }
    return http.sendAsync(r.build(), HttpResponse.BodyHandlers.ofByteArray())
        .handle((resp, err) -> {
          if (err != null) {
            Throwable cause = err instanceof CompletionException && err.getCause() != null ? err.getCause() : err;
            throw new SwitchboardException.Transport(method + " " + path + ": " + cause, cause);
          }
          return decode(resp);
        });
  }

  private static Answer decode(HttpResponse<byte[]> resp) {
    String rid = resp.headers().firstValue("x-request-id").orElse(null);
    byte[] bytes = resp.body();
    Object value = null;
    try {
      if (resp.headers().firstValue("content-encoding").map(e -> e.equalsIgnoreCase("gzip")).orElse(false)) {
        bytes = gunzip(bytes);
      }
      if (bytes.length > 0) value = Json.parse(new String(bytes, StandardCharsets.UTF_8));
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

  /** Waits for a future, rethrowing its {@link SwitchboardException} as is. */
  static <T> T join(CompletableFuture<T> f) {
    try {
      return f.get();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      f.cancel(true);
      throw new SwitchboardException.Transport("interrupted", e);
    } catch (ExecutionException e) {
      Throwable c = e.getCause();
      if (c instanceof RuntimeException re) throw re;
      throw new IllegalStateException(c);
    }
  }

  private static Throwable unwrap(Throwable t) {
    while (t instanceof CompletionException && t.getCause() != null) t = t.getCause();
    return t;
  }

  private CompletableFuture<Answer> json(String method, String path, Object body) {
    byte[] b = body == null ? null : Json.write(body).getBytes(StandardCharsets.UTF_8);
    return send(method, path, b, null, null, null);
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

  public CompletableFuture<Created> createStreamAsync(String stream, StreamSettings s) {
    Map<String, Object> req = new LinkedHashMap<>();
    req.put("name", stream);
    if (s != null) {
      if (s.partitions() != null) req.put("partitions", s.partitions());
      if (s.retentionMs() != null) req.put("retention_ms", s.retentionMs());
      if (s.retentionBytes() != null) req.put("retention_bytes", s.retentionBytes());
      if (s.encryptKeys() != null) req.put("encrypt_keys", s.encryptKeys());
    }
    return json("POST", "/v1/streams", req).thenApply(a -> new Created(obj(a.value()), a.status() == 201));
  }

  public Created createStream(String stream, StreamSettings s) {
    return join(createStreamAsync(stream, s));
  }

  /** {@code GET /v1/streams}. */
  @SuppressWarnings("unchecked")
  public CompletableFuture<List<Map<String, Object>>> listStreamsAsync() {
    return json("GET", "/v1/streams", null).thenApply(a -> (List<Map<String, Object>>) obj(a.value()).get("streams"));
  }

  public List<Map<String, Object>> listStreams() {
    return join(listStreamsAsync());
  }

  /** {@code GET /v1/streams/{name}}: settings and each partition's start and end offsets. */
  public CompletableFuture<Map<String, Object>> describeStreamAsync(String stream) {
    return json("GET", "/v1/streams/" + name(stream), null).thenApply(a -> obj(a.value()));
  }

  public Map<String, Object> describeStream(String stream) {
    return join(describeStreamAsync(stream));
  }

  /** {@code DELETE /v1/streams/{name}}. */
  public CompletableFuture<Void> deleteStreamAsync(String stream) {
    return json("DELETE", "/v1/streams/" + name(stream), null).thenApply(a -> null);
  }

  public void deleteStream(String stream) {
    join(deleteStreamAsync(stream));
  }

  /** Where a published event landed. */
  public record Offset(int partition, long offset) {}

  /**
   * {@code POST /v1/streams/{name}/events}, answered once durable; the offsets in request order. Safe to repeat:
   * without an idempotency key one is generated, and transport failures and retryable errors are retried under it
   * (honouring {@code retry_after_ms}), so each event is stored once even when an answer is lost.
   */
  public CompletableFuture<List<Offset>> publishAsync(String stream, List<Event> events, String idempotencyKey) {
    String key = idempotencyKey != null ? idempotencyKey : HexFormat.of().formatHex(randomBytes());
    byte[] enc = Event.encode(events);
    byte[] body = new byte[enc.length + 11];
    System.arraycopy("{\"events\":".getBytes(StandardCharsets.UTF_8), 0, body, 0, 10);
    System.arraycopy(enc, 0, body, 10, enc.length);
    body[body.length - 1] = '}';
    return retrying(() -> send("POST", "/v1/streams/" + name(stream) + "/events", body, null, Map.of("Idempotency-Key", key), null),
        Backoff.defaults())
        .thenApply(a -> {
          List<Offset> out = new ArrayList<>();
          for (Object o : (List<?>) obj(a.value()).get("offsets")) {
            Map<String, Object> m = obj(o);
            out.add(new Offset((int) num(m, "partition"), num(m, "offset")));
          }
          return out;
        });
  }

  public List<Offset> publish(String stream, List<Event> events) {
    return join(publishAsync(stream, events, null));
  }

  private static byte[] randomBytes() {
    byte[] b = new byte[16];
    RANDOM.nextBytes(b);
    return b;
  }

  private <T> CompletableFuture<T> retrying(Supplier<CompletableFuture<T>> call, Backoff backoff) {
    CompletableFuture<T> out = new CompletableFuture<>();
    attempt(call, backoff, out);
    return out;
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

  /** {@code POST /v1/sessions}; {@code mode} is "read" or "write"; other arguments may be null. */
  public CompletableFuture<Allocated> allocateAsync(
      String stream, String mode, String cursor, List<Integer> partitions, String producer) {
    Map<String, Object> req = new LinkedHashMap<>();
    req.put("stream", stream);
    req.put("mode", mode);
    if (cursor != null) req.put("cursor", cursor);
    if (partitions != null) req.put("partitions", partitions);
    if (producer != null) req.put("producer", producer);
    return json("POST", "/v1/sessions", req).thenApply(a -> {
      Map<String, Object> m = obj(a.value());
      return new Allocated((String) m.get("session"), (String) m.get("secret"), (String) m.get("mode"),
          (String) m.get("stream"), m.get("lease_ms") instanceof Number n ? n.longValue() : 30_000,
          (String) m.get("node"), (String) m.get("cursor"),
          m.get("last_block") instanceof Number n ? n.longValue() : null);
    });
  }

  public Allocated allocate(String stream, String mode, String cursor, List<Integer> partitions, String producer) {
    return join(allocateAsync(stream, mode, cursor, partitions, producer));
  }

  private CompletableFuture<Map<String, Object>> on(String method, Session s, String op, byte[] body, Duration t) {
    return send(method, "/v1/sessions/" + name(s.id()) + op, body, s, null, t).thenApply(a -> a.value() == null ? Map.of() : obj(a.value()));
  }

  /** {@code GET /v1/sessions/{id}}: the heartbeat. */
  public CompletableFuture<Map<String, Object>> sessionInfoAsync(Session s) {
    return on("GET", s, "", null, null);
  }

  public Map<String, Object> sessionInfo(Session s) {
    return join(sessionInfoAsync(s));
  }

  /** {@code POST /v1/sessions/{id}/read}; null limits are left to the server. */
  @SuppressWarnings("unchecked")
  public CompletableFuture<Batch> readAsync(Session s, Integer maxEvents, Long maxBytes, Long waitMs) {
    Map<String, Object> req = new LinkedHashMap<>();
    if (maxEvents != null) req.put("max_events", maxEvents);
    if (maxBytes != null) req.put("max_bytes", maxBytes);
    if (waitMs != null) req.put("wait_ms", waitMs);
    Duration t = timeout.plusMillis(waitMs == null ? 0 : waitMs);
    return on("POST", s, "/read", Json.write(req).getBytes(StandardCharsets.UTF_8), t).thenApply(m -> {
      List<ReadEvent> events = new ArrayList<>();
      for (Object o : (List<?>) m.get("events")) events.add(ReadEvent.from(obj(o)));
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

  public Batch read(Session s, Integer maxEvents, Long maxBytes, Long waitMs) {
    return join(readAsync(s, maxEvents, maxBytes, waitMs));
  }

  /** {@code POST /v1/sessions/{id}/ack}; the cursor after the batch. */
  public CompletableFuture<String> ackAsync(Session s, long batch) {
    return on("POST", s, "/ack", ("{\"batch\":" + batch + "}").getBytes(StandardCharsets.UTF_8), null)
        .thenApply(m -> (String) m.get("cursor"));
  }

  public String ack(Session s, long batch) {
    return join(ackAsync(s, batch));
  }

  /** {@code POST /v1/sessions/{id}/write} with the events' JSON array ({@link Event#encode}). */
  public CompletableFuture<Long> writeAsync(Session s, long block, byte[] eventsJson) {
    byte[] head = ("{\"block\":" + block + ",\"events\":").getBytes(StandardCharsets.UTF_8);
    byte[] body = new byte[head.length + eventsJson.length + 1];
    System.arraycopy(head, 0, body, 0, head.length);
    System.arraycopy(eventsJson, 0, body, head.length, eventsJson.length);
    body[body.length - 1] = '}';
    return on("POST", s, "/write", body, null).thenApply(m -> num(m, "events"));
  }

  public long write(Session s, long block, byte[] eventsJson) {
    return join(writeAsync(s, block, eventsJson));
  }

  /** A commit's answer: {@code status} is "scheduled" or "durable". */
  public record Committed(long block, String status, List<Map<String, Object>> offsets) {
    public boolean durable() {
      return "durable".equals(status);
    }
  }

  /** {@code POST /v1/sessions/{id}/commit}. */
  @SuppressWarnings("unchecked")
  public CompletableFuture<Committed> commitAsync(Session s, long block, boolean durable) {
    byte[] body = ("{\"block\":" + block + ",\"durable\":" + durable + "}").getBytes(StandardCharsets.UTF_8);
    return on("POST", s, "/commit", body, null).thenApply(m -> new Committed(num(m, "block"), (String) m.get("status"),
        m.get("offsets") instanceof List<?> l ? (List<Map<String, Object>>) l : List.of()));
  }

  public Committed commit(Session s, long block, boolean durable) {
    return join(commitAsync(s, block, durable));
  }

  /** {@code DELETE /v1/sessions/{id}}. */
  public CompletableFuture<Map<String, Object>> disposeAsync(Session s) {
    return on("DELETE", s, "", null, null);
  }

  public Map<String, Object> dispose(Session s) {
    return join(disposeAsync(s));
  }

  /** {@code GET /v1/cluster}. */
  public CompletableFuture<Map<String, Object>> clusterAsync() {
    return json("GET", "/v1/cluster", null).thenApply(a -> obj(a.value()));
  }

  public Map<String, Object> cluster() {
    return join(clusterAsync());
  }
}
