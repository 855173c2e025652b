package dev.contextd.client;

import io.grpc.Status;
import java.util.Iterator;
import java.util.NoSuchElementException;
import java.util.Spliterator;
import java.util.Spliterators;
import java.util.stream.Stream;
import java.util.stream.StreamSupport;

/**
 * The events of one streamed turn, in order: {@link Event.Started}, {@link Event.Delta}s,
 * {@link Event.ToolCallRequested} and {@link Event.ServerToolRan}, and {@link Event.Completed}
 * last. Iterate it (or {@link #stream()} it) once; errors surface from {@code hasNext}/{@code next}
 * as {@link io.grpc.StatusRuntimeException}. Closing it before the end cancels the turn.
 */
public abstract class EventStream implements Iterator<Event>, Iterable<Event>, AutoCloseable {
  private Event next;
  private boolean done;

  EventStream() {}

  /** The next event from the wire, or {@code null} at the end of the turn. */
  abstract Event read();

  /**
   * Asks, from any thread, for the turn to be cancelled while another thread reads it; that
   * reader still calls {@link #close}, which reads what is left. Streams whose {@code close}
   * alone cancels from any thread need nothing more.
   */
  void cancelFromAnyThread() {
    close();
  }

  /** Stops reading before the end; the turn is cancelled. */
  @Override
  public abstract void close();

  @Override
  public boolean hasNext() {
    if (next == null && !done) {
      next = read();
      done = next == null;
    }
    return next != null;
  }

  @Override
  public Event next() {
    if (!hasNext()) {
      throw new NoSuchElementException();
    }
    Event e = next;
    next = null;
    return e;
  }

  @Override
  public Iterator<Event> iterator() {
    return this;
  }

  /** The events as a sequential stream; closing the stream closes this. */
  public Stream<Event> stream() {
    return StreamSupport.stream(Spliterators.spliteratorUnknownSize(this, Spliterator.ORDERED | Spliterator.NONNULL), false)
        .onClose(this::close);
  }

  /** Reads to the end and returns the turn's final {@link Reply}. */
  public Reply reply() {
    Reply reply = null;
    try (this) {
      while (hasNext()) {
        if (next() instanceof Event.Completed c) {
          reply = c.reply();
        }
      }
    }
    if (reply == null) {
      throw Status.INTERNAL.withDescription("the stream ended without a completed event").asRuntimeException();
    }
    return reply;
  }
}
