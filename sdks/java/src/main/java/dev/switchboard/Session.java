package dev.switchboard;

/** A session: its id, signing secret and lease. */
public record Session(String id, String secret, long leaseMs) {
  @Override
  public String toString() {
    return "Session[id=" + id + "]"; // the secret stays out of logs
  }
}
