package dev.contextd.client;

import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Flow;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Supplier;

/**
 * A Converse stream without blocking the caller (from {@link AsyncContextdClient#converse}):
 * {@link #send} gives a turn's events as a {@link Flow.Publisher}, {@link #say} its reply as a
 * future. Turns run one at a time in the order they were asked for, on the conversation's own
 * reading thread, through the same state machine as the blocking {@link Conversation}, so that
 * both behave alike when a turn is left early: cancelling a turn's subscription (or its future)
 * cancels the turn on the server, what is left of it is read, and the next turn's reply is its
 * own. A {@link ToolHandler} runs on that thread too.
 */
public final class AsyncConversation implements AutoCloseable {
  private final Conversation conversation;
  private final ExecutorService reader;

  AsyncConversation(Conversation conversation, ExecutorService reader) {
    this.conversation = conversation;
    this.reader = reader;
  }

  /** The session as it was when the stream was attached. */
  public Session session() {
    return conversation.session();
  }

  /** Whether attaching the stream created the session. */
  public boolean created() {
    return conversation.created();
  }

  /**
   * A turn with a user message and an optional context patch, sent when the publisher is
   * subscribed (once), as {@link Conversation#send(String, Map)} describes its events. A
   * refused message is signalled as {@link TurnErrorException}. Until the subscriber asks for
   * events or cancels, later turns wait.
   */
  public Flow.Publisher<Event> send(String message, Map<String, ?> context) {
    return send(message, context, null);
  }

  /** {@link #send(String, Map)} with an idempotency key (may be null). */
  public Flow.Publisher<Event> send(String message, Map<String, ?> context, String idempotencyKey) {
    return new TurnPublisher(() -> conversation.send(message, context, idempotencyKey));
  }

  /** Continues a paused turn with results for every pending call; its events as {@link #send}'s. */
  public Flow.Publisher<Event> sendToolResults(List<ToolResult> results) {
    return new TurnPublisher(() -> conversation.sendToolResults(results));
  }

  /** Sends a user message; completes with the turn's final reply. Cancelling cancels the turn. */
  public CompletableFuture<Reply> say(String message, Map<String, ?> context) {
    return reply(() -> conversation.send(message, context));
  }

  /** Sends a user message without context; completes with the turn's final reply. */
  public CompletableFuture<Reply> say(String message) {
    return say(message, null);
  }

  /** Continues a paused turn with results; completes with the turn's final reply. */
  public CompletableFuture<Reply> replyToolResults(List<ToolResult> results) {
    return reply(() -> conversation.sendToolResults(results));
  }

  /** {@link Conversation#abandonToolCalls}: completes with the abandoned turn's reply. */
  public CompletableFuture<Reply> abandonToolCalls() {
    return CompletableFuture.supplyAsync(conversation::abandonToolCalls, reader);
  }

  /** {@link Conversation#cancel}: cancels the running turn, or abandons a paused one. */
  public void cancel() {
    conversation.cancel();
  }

  /** Half-closes the stream after the turns asked for so far; completes when the server ended it. */
  public CompletableFuture<Void> closeAsync() {
    CompletableFuture<Void> closed = CompletableFuture.runAsync(conversation::close, reader);
    reader.shutdown();
    return closed;
  }

  /** {@link #closeAsync} and waits for it; a stream that ended with an error throws it. */
  @Override
  public void close() {
    try {
      closeAsync().join();
    } catch (java.util.concurrent.CompletionException e) {
      if (e.getCause() instanceof RuntimeException r) {
        throw r;
      }
      throw e;
    }
  }

  private CompletableFuture<Reply> reply(Supplier<EventStream> turn) {
    TurnFuture future = new TurnFuture();
    reader.execute(() -> {
      EventStream events;
      synchronized (future) {
        if (future.isDone()) {
          return; // cancelled before it was sent
        }
        try {
          events = turn.get();
        } catch (RuntimeException e) {
          future.completeExceptionally(e);
          return;
        }
        future.events = events;
      }
      try {
        future.complete(events.reply());
      } catch (RuntimeException e) {
        future.completeExceptionally(e);
      }
    });
    return future;
  }

  /** A turn's reply; cancelling it cancels the turn once it was sent. */
  private static final class TurnFuture extends CompletableFuture<Reply> {
    private EventStream events; // guarded by this

    @Override
    public boolean cancel(boolean mayInterruptIfRunning) {
      boolean cancelled = super.cancel(mayInterruptIfRunning);
      if (cancelled) {
        EventStream sent;
        synchronized (this) {
          sent = events;
        }
        if (sent != null) {
          sent.cancelFromAnyThread();
        }
      }
      return cancelled;
    }
  }

  /** One turn's events, read on the conversation's thread as the subscriber asks for them. */
  private final class TurnPublisher implements Flow.Publisher<Event> {
    private final Supplier<EventStream> turn;
    private final AtomicBoolean subscribed = new AtomicBoolean();

    TurnPublisher(Supplier<EventStream> turn) {
      this.turn = turn;
    }

    @Override
    public void subscribe(Flow.Subscriber<? super Event> subscriber) {
      if (!subscribed.compareAndSet(false, true)) {
        subscriber.onSubscribe(new Demand());
        subscriber.onError(new IllegalStateException("this publisher runs one turn and has been subscribed already"));
        return;
      }
      Demand demand = new Demand();
      subscriber.onSubscribe(demand);
      reader.execute(() -> pump(subscriber, demand));
    }

    private void pump(Flow.Subscriber<? super Event> subscriber, Demand demand) {
      EventStream events;
      synchronized (demand) {
        if (demand.cancelled) {
          return; // never sent
        }
        try {
          events = turn.get();
        } catch (RuntimeException e) {
          subscriber.onError(e);
          return;
        }
        demand.events = events;
      }
      try {
        while (demand.take()) {
          if (!events.hasNext()) {
            subscriber.onComplete();
            return;
          }
          Event e = events.next();
          if (demand.isCancelled()) {
            break;
          }
          subscriber.onNext(e);
        }
      } catch (RuntimeException e) {
        if (!demand.isCancelled()) {
          subscriber.onError(e);
        }
      } finally {
        // Left early (or ended): cancel what still runs and read what is left, so the next turn
        // starts clean.
        events.close();
      }
    }
  }

  /** A subscriber's demand, waited for by the reading thread. */
  private static final class Demand implements Flow.Subscription {
    private long requested; // guarded by this, as the rest
    private boolean cancelled;
    private EventStream events;
    private IllegalArgumentException invalid;

    @Override
    public synchronized void request(long n) {
      if (n <= 0) {
        invalid = new IllegalArgumentException("Flow.Subscription.request needs a positive count, got " + n);
      } else {
        requested = requested + n < 0 ? Long.MAX_VALUE : requested + n;
      }
      notifyAll();
    }

    @Override
    public void cancel() {
      EventStream running;
      synchronized (this) {
        if (cancelled) {
          return;
        }
        cancelled = true;
        running = events;
        notifyAll();
      }
      if (running != null) {
        running.cancelFromAnyThread();
      }
    }

    synchronized boolean isCancelled() {
      return cancelled;
    }

    /** Waits for a unit of demand; false once cancelled. Throws a non-positive request. */
    synchronized boolean take() {
      while (requested == 0 && !cancelled && invalid == null) {
        try {
          wait();
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
          cancelled = true;
        }
      }
      if (invalid != null && !cancelled) {
        throw invalid; // signalled by the reading thread, which then cancels the turn
      }
      if (cancelled) {
        return false;
      }
      if (requested != Long.MAX_VALUE) {
        requested--;
      }
      return true;
    }
  }
}
