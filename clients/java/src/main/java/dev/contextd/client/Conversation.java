package dev.contextd.client;

import contextd.v1.Interact.ConverseCancel;
import contextd.v1.Interact.ConverseRequest;
import contextd.v1.Interact.ConverseResponse;
import contextd.v1.Interact.ConverseToolResults;
import contextd.v1.Interact.ConverseUserMessage;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;

/**
 * One Converse stream attached to a session: many turns, one at a time. {@link #send},
 * {@link #say}, {@link #sendToolResults} and {@link #close} must not run concurrently with each
 * other; {@link #cancel} may be called from any thread while a turn runs.
 */
public final class Conversation implements AutoCloseable {
  /** What the response observer hands over: a frame, or the stream's end. */
  private record Item(ConverseResponse frame, Status end) {}

  private final BlockingQueue<Item> inbox = new LinkedBlockingQueue<>();
  private final ToolHandler handler;
  private final Object sendLock = new Object();
  private ClientCallStreamObserver<ConverseRequest> requests;
  private Status ended;
  // Cancel frames whose answer is still unread (guarded by sendLock). Each is answered either
  // by a turn completing as cancelled or, when no turn ran any more, by an error event outside
  // any turn that is not the caller's business.
  private int pendingCancels;
  // Whether the session waits for tool results, as far as the frames read so far tell; whether
  // a turn's events are being read (a turn was started and its end not read); and whether a
  // cancel while paused, with no turn running, started an abandon whose frames are unread (the
  // next turn reads them first). Guarded by sendLock.
  private boolean paused;
  private boolean running;
  private boolean abandoning;
  private boolean halfClosed;
  private Session session;
  private boolean created;

  Conversation(ToolHandler handler) {
    this.handler = handler;
  }

  /** Opens a Converse stream on {@code stub} and waits until it is attached to the session. */
  static Conversation start(contextd.v1.InteractServiceGrpc.InteractServiceStub stub, SessionOptions open, ToolHandler handler) {
    Conversation conversation = new Conversation(handler);
    stub.converse(conversation.observer());
    conversation.open(ContextdClient.converseOpen(open));
    return conversation;
  }

  /** The observer that the async stub calls with server frames. */
  ClientResponseObserver<ConverseRequest, ConverseResponse> observer() {
    return new ClientResponseObserver<>() {
      @Override
      public void beforeStart(ClientCallStreamObserver<ConverseRequest> stream) {
        requests = stream;
      }

      @Override
      public void onNext(ConverseResponse value) {
        inbox.add(new Item(value, null));
      }

      @Override
      public void onError(Throwable t) {
        inbox.add(new Item(null, Status.fromThrowable(t)));
      }

      @Override
      public void onCompleted() {
        inbox.add(new Item(null, Status.OK));
      }
    };
  }

  void open(contextd.v1.Interact.ConverseOpen open) {
    sendFrame(ConverseRequest.newBuilder().setOpen(open).build());
    while (true) {
      ConverseResponse r = receive();
      if (r == null) {
        throw Status.UNAVAILABLE.withDescription("the server ended the Converse stream before attaching it").asRuntimeException();
      }
      if (r.hasOpened()) {
        session = Session.fromWire(r.getOpened().getSession());
        created = r.getOpened().getSessionCreated();
        paused = r.getOpened().getSession().getPendingToolCallsCount() > 0;
        return;
      }
      if (r.hasError()) {
        throw new TurnErrorException(r.getTurnId(), r.getError().getCode(), r.getError().getMessage());
      }
    }
  }

  /** The session as it was when the stream was attached. */
  public Session session() {
    return session;
  }

  /** Whether attaching the stream created the session. */
  public boolean created() {
    return created;
  }

  /**
   * Starts a turn with a user message and an optional context patch, and returns its events.
   * With a {@link ToolHandler}, client-side tool calls are answered automatically and the turn
   * goes on (the {@link Event.ToolCallRequested} events and the pausing {@link Event.Completed}
   * still show); without one the events end at the {@link Event.Completed} whose reply
   * {@code needsToolResults()}, and {@link #sendToolResults} continues. A refused message
   * throws {@link TurnErrorException} from the iteration.
   */
  public EventStream send(String message, Map<String, ?> context) {
    return send(message, context, null);
  }

  /**
   * {@link #send(String, Map)} with an idempotency key (may be null): resent on a new stream
   * after the old one broke, the message gets its first outcome instead of a second turn (see
   * {@link Turn#idempotencyKey()}).
   */
  public EventStream send(String message, Map<String, ?> context, String idempotencyKey) {
    ConverseUserMessage.Builder m = ConverseUserMessage.newBuilder().setMessage(message);
    if (idempotencyKey != null) {
      m.setIdempotencyKey(idempotencyKey);
    }
    if (context != null) {
      m.setContext(Values.toStruct(context));
    }
    abandonCurrent();
    startTurn(ConverseRequest.newBuilder().setUserMessage(m).build());
    current = new TurnEvents();
    return current;
  }

  /** Sends a user message and returns the turn's final reply. */
  public Reply say(String message, Map<String, ?> context) {
    return send(message, context).reply();
  }

  /** Sends a user message without context and returns the turn's final reply. */
  public Reply say(String message) {
    return say(message, null);
  }

  /** Continues a paused turn with results for every pending call. */
  public EventStream sendToolResults(List<ToolResult> results) {
    abandonCurrent();
    ConverseToolResults.Builder b = ConverseToolResults.newBuilder();
    results.forEach(r -> b.addResults(r.toWire()));
    startTurn(ConverseRequest.newBuilder().setToolResults(b).build());
    current = new TurnEvents();
    return current;
  }

  /**
   * Abandons the turn paused for tool results: every pending call gets the error result
   * "cancelled by the client", stored with its call; the turn ends with {@code
   * FINISH_REASON_CANCELLED} without another model step and the session is idle again.
   *
   * @return that reply
   * @throws TurnErrorException with FAILED_PRECONDITION when nothing is paused
   */
  public Reply abandonToolCalls() {
    abandonCurrent();
    startTurn(cancelFrame());
    current = new TurnEvents();
    try {
      return current.reply();
    } finally {
      synchronized (sendLock) {
        paused = false; // abandoned, or refused because nothing was paused
      }
    }
  }

  /**
   * A turn whose events were not read to the end (and not closed) is ended first, and so is an
   * abandon that {@link #cancel} started.
   */
  private void abandonCurrent() {
    if (current != null) {
      current.close();
      current = null;
    }
    boolean unread;
    synchronized (sendLock) {
      unread = abandoning;
      abandoning = false;
    }
    if (unread) {
      readToEndOfTurn();
    }
  }

  /**
   * Cancels the running turn: it ends with {@code FINISH_REASON_CANCELLED} and nothing of it is
   * stored. While the session waits for tool results (a pausing {@link Event.Completed} was read
   * and not answered) and no turn runs, abandons the paused turn instead, as {@link
   * #abandonToolCalls} does; the next {@link #send} reads the abandon's frames first. Does nothing
   * when no turn runs or waits.
   */
  public void cancel() {
    synchronized (sendLock) {
      if (paused && !running) {
        // Answered by the abandon's own frames (or an error), which abandonCurrent reads.
        paused = false;
        abandoning = true;
      } else {
        pendingCancels++;
      }
      requests.onNext(cancelFrame());
    }
  }

  /** Cancels the running turn (never an abandon), for a turn left mid-way. */
  private void cancelRunning() {
    synchronized (sendLock) {
      pendingCancels++;
      requests.onNext(cancelFrame());
    }
  }

  private static ConverseRequest cancelFrame() {
    return ConverseRequest.newBuilder().setCancel(ConverseCancel.getDefaultInstance()).build();
  }

  /** Sends the frame that starts a turn; the turn runs until its end is read. */
  private void startTurn(ConverseRequest frame) {
    synchronized (sendLock) {
      running = true;
    }
    sendFrame(frame);
  }

  /** Reads up to and including the next completed or error frame. */
  private void readToEndOfTurn() {
    ConverseResponse r;
    while ((r = receive()) != null) {
      if (r.hasCompleted() || r.hasError()) {
        return;
      }
    }
  }

  /** Follows the session's pause: a cancelled continuation leaves it as it was. */
  private void notePause(Reply reply) {
    synchronized (sendLock) {
      if (reply.finishReason() != contextd.v1.Common.FinishReason.FINISH_REASON_CANCELLED) {
        paused = reply.needsToolResults() && handler == null;
      }
    }
  }

  private void turnOver() {
    synchronized (sendLock) {
      running = false;
    }
  }

  /**
   * Half-closes the stream and waits for the server to end it.
   *
   * @throws StatusRuntimeException when the stream ended with an error
   */
  @Override
  public void close() {
    if (ended != null) {
      return;
    }
    synchronized (sendLock) {
      halfClosed = true;
      requests.onCompleted();
    }
    while (receive() != null) {
      // Frames still in flight (of an abandoned turn) are of no use any more.
    }
    if (!ended.isOk()) {
      throw ended.asRuntimeException();
    }
  }

  private void sendResults(List<ToolResult> results) {
    ConverseToolResults.Builder b = ConverseToolResults.newBuilder();
    results.forEach(r -> b.addResults(r.toWire()));
    sendFrame(ConverseRequest.newBuilder().setToolResults(b).build());
  }

  private void sendFrame(ConverseRequest frame) {
    if (ended != null) {
      throw (ended.isOk() ? Status.UNAVAILABLE.withDescription("the Converse stream has ended") : ended).asRuntimeException();
    }
    synchronized (sendLock) {
      requests.onNext(frame);
    }
  }

  /** The next server frame, or {@code null} once the stream has ended (see {@link #ended}). */
  private ConverseResponse receive() {
    while (ended == null) {
      Item item;
      try {
        item = inbox.take();
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        requests.cancel("interrupted", e);
        throw Status.CANCELLED.withDescription("interrupted").withCause(e).asRuntimeException();
      }
      if (item.end() != null) {
        ended = item.end();
        return null;
      }
      ConverseResponse r = item.frame();
      synchronized (sendLock) {
        if (pendingCancels > 0) {
          if (r.hasCompleted() && r.getCompleted().getFinishReason() == contextd.v1.Common.FinishReason.FINISH_REASON_CANCELLED) {
            pendingCancels--;
          } else if (r.hasError() && r.getTurnId().isEmpty() && r.getError().getCode() == Status.Code.FAILED_PRECONDITION.value()) {
            pendingCancels--;
            continue;
          }
        }
      }
      return r;
    }
    return null;
  }

  /** The turn last started, until it is read to its end or closed. */
  private TurnEvents current;

  /** The events of one turn on this stream. */
  private final class TurnEvents extends EventStream {
    // Set by the reading thread when the turn's last frame is read; read under sendLock by
    // cancelFromAnyThread, so written under it too.
    private boolean over;
    // Whether the turn's last completed frame paused it for tool results (read by close).
    private boolean endedPaused;
    // Whether a cancel for this turn went out already (guarded by sendLock).
    private boolean cancelSent;
    // Whether close ran (the reading thread's own).
    private boolean closed;

    private void finish(boolean pausedAtEnd) {
      synchronized (sendLock) {
        over = true;
        endedPaused = pausedAtEnd;
      }
    }

    /**
     * Sends this turn's cancel at once, from any thread, when the turn still runs; the reading
     * thread's {@link #close} then reads what is left of it without sending another.
     */
    @Override
    void cancelFromAnyThread() {
      synchronized (sendLock) {
        if (over || cancelSent || halfClosed) {
          return;
        }
        cancelSent = true;
        pendingCancels++;
        requests.onNext(cancelFrame());
      }
    }

    @Override
    Event read() {
      while (!over) {
        ConverseResponse r = receive();
        if (r == null) {
          finish(false);
          throw (ended.isOk() ? Status.UNAVAILABLE.withDescription("the server ended the Converse stream during a turn") : ended)
              .asRuntimeException();
        }
        switch (r.getEventCase()) {
          case ERROR:
            finish(false);
            turnOver();
            throw new TurnErrorException(r.getTurnId(), r.getError().getCode(), r.getError().getMessage());
          case COMPLETED:
            Reply reply = Reply.fromWire(r.getCompleted());
            notePause(reply);
            if (reply.needsToolResults() && handler != null) {
              sendResults(runTools(reply.toolCalls()));
            } else {
              finish(reply.needsToolResults());
              turnOver();
            }
            return new Event.Completed(reply);
          case STARTED:
            return Event.started(r.getStarted());
          case DELTA:
            return new Event.Delta(r.getDelta().getText());
          case TOOL_CALL:
            return new Event.ToolCallRequested(ToolCall.fromWire(r.getToolCall()));
          case TOOL_RESULT:
            return Event.serverToolRan(r.getToolResult());
          default:
            continue;
        }
      }
      return null;
    }

    @Override
    public void close() {
      if (closed || ended != null) {
        return;
      }
      closed = true;
      boolean sent;
      boolean wasOver;
      boolean pausedAtEnd;
      synchronized (sendLock) {
        sent = cancelSent;
        wasOver = over;
        pausedAtEnd = endedPaused;
        if (!wasOver) {
          cancelSent = true; // by cancelRunning below, unless another thread sent it
          over = true;
        }
      }
      if (wasOver) {
        // Read to its end, but a cancel from another thread may have gone out as the end
        // arrived: at a pause, that cancel abandons the paused turn, and its frames are read
        // here; otherwise the server refuses it outside any turn and receive() drops that.
        if (sent && pausedAtEnd) {
          synchronized (sendLock) {
            paused = false;
          }
          readToEndOfTurn();
        }
        return;
      }
      // Abandoned mid-turn: cancel it and read what is left, so the next turn starts clean. A
      // turn that paused before the cancel reached it is abandoned by the cancel: that
      // abandon's frames are read too.
      if (!sent) {
        cancelRunning();
      }
      try {
        ConverseResponse r;
        while ((r = receive()) != null) {
          if (r.hasCompleted() && Reply.fromWire(r.getCompleted()).needsToolResults()) {
            synchronized (sendLock) {
              paused = false;
            }
            readToEndOfTurn();
            return;
          }
          if (r.hasCompleted() || r.hasError()) {
            return;
          }
        }
      } finally {
        turnOver();
      }
    }
  }

  private List<ToolResult> runTools(List<ToolCall> calls) {
    List<ToolResult> results = new ArrayList<>();
    for (ToolCall call : calls) {
      try {
        results.add(ToolResult.ok(call.id(), handler.handle(call)));
      } catch (Exception e) {
        results.add(ToolResult.error(call.id(), e.getMessage() == null ? e.toString() : e.getMessage()));
      }
    }
    return results;
  }
}
