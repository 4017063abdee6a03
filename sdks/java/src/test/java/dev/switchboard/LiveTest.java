package dev.switchboard;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIfEnvironmentVariable;

/** Against a real server: {@code SWITCHBOARD_BIN} names the binary. */
@EnabledIfEnvironmentVariable(named = "SWITCHBOARD_BIN", matches = ".+")
class LiveTest {
  static final String TOKEN = "java-sdk-test-token-0123456789";
  static Process server;
  static Path dir;
  static String url;

  @BeforeAll
  static void start() throws Exception {
    dir = Files.createTempDirectory("sb-java-");
    server = new ProcessBuilder(System.getenv("SWITCHBOARD_BIN"), "serve", "--data-dir", dir.toString(), "--listen",
        "127.0.0.1:0", "--token", TOKEN, "--lease-ms", "2000")
        .redirectError(ProcessBuilder.Redirect.DISCARD)
        .start();
    String line = new BufferedReader(new InputStreamReader(server.getInputStream(), StandardCharsets.UTF_8)).readLine();
    assertNotNull(line);
    assertTrue(line.startsWith("switchboard listening on "), line);
    url = line.substring("switchboard listening on ".length()).trim();
  }

  @AfterAll
  static void stop() throws Exception {
    if (server != null) {
      server.destroy();
      if (!server.waitFor(30, TimeUnit.SECONDS)) {
        server.destroyForcibly().waitFor();
      }
    }
    // once the server has exited: it writes to its data directory until then
    if (dir != null) {
      try (var paths = Files.walk(dir)) {
        paths.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
      }
    }
  }

  static String name() {
    return "java-" + UUID.randomUUID().toString().substring(0, 12);
  }

  @Test
  void publishWriteWithAProducerAndConsume() throws Exception {
    String s = name();
    try (SwitchboardClient c = SwitchboardClient.builder(url).tokenSupplier(() -> TOKEN).compression(Compression.GZIP).build()) {
      assertTrue(c.createStreamAsync(s, SwitchboardClient.StreamSettings.partitions(2)).get().created());
      assertFalse(c.createStream(s, SwitchboardClient.StreamSettings.partitions(2)).created());
      c.publish(s, List.of(Event.of(Map.of("i", -1)).withKey("a").withHeader("h", "1"), Event.bytes(new byte[] {0, -1}).withKey("b")));
      try (Writer w = Writer.open(c, s, Writer.Options.defaults().withProducer("p1"))) {
        for (int b = 0; b < 3; b++) {
          List<Event> events = new ArrayList<>();
          for (int j = 0; j < 10; j++) events.add(Event.of(Map.of("i", b * 10 + j)).withKey("k" + j));
          w.send(events);
        }
        assertEquals(3, w.flush());
      }
      List<ReadEvent> got = new ArrayList<>();
      try (Reader r = Reader.open(c, s, "earliest", Reader.Options.defaults().withMaxEvents(7))) {
        while (got.size() < 32) {
          got.addAll(r.next().events());
          r.ack();
        }
      }
      assertEquals(32, got.size());
      ReadEvent b = got.stream().filter(e -> "b".equals(e.key())).findFirst().orElseThrow();
      assertArrayEquals(new byte[] {0, -1}, b.valueBytes());
      assertEquals(Map.of("h", "1"), got.stream().filter(e -> "a".equals(e.key())).findFirst().orElseThrow().headers());
      try (Writer w2 = Writer.open(c, s, Writer.Options.defaults().withProducer("p1"))) {
        assertEquals(4, w2.send(List.of(Event.of(1))), "a second writer of the producer goes on after block 3");
      }
    }
  }

  @Test
  void aReaderResumesFromItsCursorAndErrorsAreTyped() {
    String s = name();
    try (SwitchboardClient c = SwitchboardClient.builder(url).token(TOKEN).build()) {
      c.createStream(s, null);
      assertTrue(c.config().containsKey("session"));
      assertTrue(c.ready());
      assertTrue(String.valueOf(c.openapi().get("openapi")).startsWith("3.1"));
      List<Event> events = new ArrayList<>();
      for (int i = 0; i < 20; i++) events.add(Event.of(i));
      c.publish(s, events);
      String cursor;
      try (Reader r = Reader.open(c, s, "earliest", Reader.Options.defaults().withMaxEvents(5))) {
        Batch b = r.next();
        assertEquals(List.of(0L, 1L, 2L, 3L, 4L), b.events().stream().map(ReadEvent::value).toList());
        assertEquals(b.batch(), r.next().batch(), "an unacked batch comes again");
        cursor = r.ack();
      }
      try (Reader r2 = Reader.open(c, s, cursor, Reader.Options.defaults().withMaxEvents(100).withWaitMs(0))) {
        assertEquals(15, r2.next().events().size());
      }
      String forged = cursor.substring(0, cursor.length() - 3) + "AAA";
      var e = assertThrows(SwitchboardException.Api.class, () -> Reader.open(c, s, forged, null));
      assertEquals("bad_cursor", e.code());
      assertFalse(e.retryable());
      assertNotNull(e.requestId());
      var missing = assertThrows(SwitchboardException.class, () -> Writer.open(c, name(), null));
      assertEquals("stream_not_found", missing.code());
    }
  }

  @Test
  void aBatchHeldPastTheLeaseIsStillAckedOnItsSession() throws Exception {
    String s = name();
    try (SwitchboardClient c = SwitchboardClient.builder(url).token(TOKEN).build()) {
      c.createStream(s, null);
      c.publish(s, List.of(Event.of(1), Event.of(2)));
      try (Reader r = Reader.open(c, s, "earliest", null)) {
        r.next();
        Session session = r.session();
        Thread.sleep(3500); // the lease is 2 s
        String before = r.cursor();
        assertNotEquals(before, r.ack());
        assertSame(session, r.session());
      }
    }
  }
}
