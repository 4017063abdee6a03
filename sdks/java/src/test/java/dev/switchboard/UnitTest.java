package dev.switchboard;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.switchboard.internal.Json;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class UnitTest {
  @Test
  @SuppressWarnings("unchecked")
  void signingMatchesTheSharedVectors() throws Exception {
    Path p = Path.of("../../crates/proto/tests/vectors/signing.json");
    List<Object> cases = (List<Object>) Json.parseObject(Files.readString(p)).get("cases");
    assertFalse(cases.isEmpty());
    for (Object o : cases) {
      Map<String, Object> c = (Map<String, Object>) o;
      String got = Signing.sign((String) c.get("secret"), ((Number) c.get("t")).longValue(), (String) c.get("method"),
          (String) c.get("path"), ((String) c.get("body")).getBytes(StandardCharsets.UTF_8));
      assertEquals(c.get("header"), got);
    }
  }

  @Test
  void jsonRoundTripsWhatTheProtocolCarries() {
    String text = "{\"a\":[1,-2,3.5,true,false,null],\"s\":\"q\\\"\\\\\\n\\u00e9\\ud83d\\ude00\",\"big\":18446744073709551615,\"o\":{}}";
    Map<String, Object> m = Json.parseObject(text);
    assertEquals(List.of(1L, -2L, 3.5, true, false), ((List<?>) m.get("a")).subList(0, 5));
    assertEquals("q\"\\\né\uD83D\uDE00", m.get("s"));
    assertEquals(new BigInteger("18446744073709551615"), m.get("big"));
    assertEquals(m, Json.parseObject(Json.write(m)));
    assertThrows(IllegalArgumentException.class, () -> Json.parse("{\"a\":1,}"));
    assertThrows(IllegalArgumentException.class, () -> Json.parse("[1] x"));
    assertThrows(IllegalArgumentException.class, () -> Json.parse("[".repeat(1000)));
    assertThrows(IllegalArgumentException.class, () -> Event.json("{not json"));
  }

  @Test
  void eventsEncodeAsTheProtocolSays() {
    byte[] b = Event.encode(List.of(Event.of(Map.of("n", 1)).withKey("k").withHeader("h", "v"), Event.bytes(new byte[] {0, -1})));
    assertEquals("[{\"key\":\"k\",\"headers\":{\"h\":\"v\"},\"value\":{\"n\":1}},{\"value_b64\":\"AP8=\"}]",
        new String(b, StandardCharsets.UTF_8));
  }

  @Test
  void backoffGrowsToItsCapAndHonoursAFloor() {
    Backoff b = new Backoff(Duration.ofMillis(10), Duration.ofMillis(40), 5);
    for (int i = 0; i < 5; i++) {
      long d = b.nextDelayMs(0);
      assertTrue(d >= 0 && d <= 40, "delay " + d);
    }
    assertEquals(-1, b.nextDelayMs(0));
    assertTrue(new Backoff(Duration.ofMillis(1), Duration.ofMillis(1), 3).nextDelayMs(300) >= 300);
  }

  @Test
  void errorsCarryCodeRetryableAndRequestId() {
    var e = new SwitchboardException.Api(429, "backpressure", "full", true, "req-1", 20L, null);
    assertEquals("backpressure", e.code());
    assertTrue(e.retryable());
    assertEquals("req-1", e.requestId());
    assertTrue(e.getMessage().contains("req-1"));
    assertTrue(new SwitchboardException.Api(503, "unavailable", "", false, null, null, null).retryable());
    var gone = new SwitchboardException.Api(410, "session_gone", "", false, null, null, 3L);
    assertTrue(gone.isSessionGone() && gone.isFenced());
    Backoff b = new Backoff(Duration.ofMillis(1), Duration.ofMillis(1), 1);
    b.retryOrThrow(e);
    var gaveUp = assertThrows(SwitchboardException.GaveUp.class, () -> b.retryOrThrow(e));
    assertEquals("req-1", gaveUp.requestId());
    assertInstanceOf(SwitchboardException.Api.class, gaveUp.last());
    var conflict = new SwitchboardException.Api(409, "conflict", "", false, null, null, null);
    assertThrows(SwitchboardException.Api.class, () -> Backoff.defaults().retryOrThrow(conflict));
  }
}
