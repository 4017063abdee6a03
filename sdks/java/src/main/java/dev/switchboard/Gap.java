package dev.switchboard;

/** Offsets {@code from} to {@code to - 1} of {@code partition} were removed by retention before they could be read. */
public record Gap(int partition, long from, long to) {}
