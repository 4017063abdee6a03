package dev.switchboard;

/** How request bodies are compressed (bodies under 1 KiB never are). */
public enum Compression {
  NONE,
  GZIP
}
