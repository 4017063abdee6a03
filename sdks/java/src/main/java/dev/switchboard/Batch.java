package dev.switchboard;

import java.util.List;

/**
 * One read answer. {@code batch} is 0 when nothing came within the wait (nothing to ack then). {@code gaps} lists
 * offsets that retention removed before they could be read: the stream goes on after them.
 */
public record Batch(long batch, List<ReadEvent> events, String cursor, List<Gap> gaps) {}
