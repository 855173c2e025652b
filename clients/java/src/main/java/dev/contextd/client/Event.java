package dev.contextd.client;

/**
 * One event of a streamed turn. Kinds a newer server adds are skipped by this client.
 */
public sealed interface Event
    permits Event.Started, Event.Delta, Event.ToolCallRequested, Event.ServerToolRan, Event.Completed {

  /**
   * A turn began.
   *
   * @param turnId the turn
   * @param sessionId the session
   * @param sessionCreated whether the turn created the session
   */
  record Started(String turnId, String sessionId, boolean sessionCreated) implements Event {}

  /**
   * The next piece of the assistant's text.
   *
   * @param text the text to append
   */
  record Delta(String text) implements Event {}

  /**
   * The model asked for a client-side tool; the turn pauses after {@link Completed}.
   *
   * @param call the call to run
   */
  record ToolCallRequested(ToolCall call) implements Event {}

  /**
   * A server-side tool ran during the turn.
   *
   * @param call the call the model made
   * @param result what the tool returned
   */
  record ServerToolRan(ToolCall call, ToolResult result) implements Event {}

  /**
   * The turn ended (or paused for client-side tools: {@code reply().needsToolResults()}).
   *
   * @param reply the turn's outcome
   */
  record Completed(Reply reply) implements Event {}

  static Event fromWire(contextd.v1.Interact.StreamResponseResponse r) {
    switch (r.getEventCase()) {
      case STARTED:
        return started(r.getStarted());
      case DELTA:
        return new Delta(r.getDelta().getText());
      case TOOL_CALL:
        return new ToolCallRequested(ToolCall.fromWire(r.getToolCall()));
      case TOOL_RESULT:
        return serverToolRan(r.getToolResult());
      case COMPLETED:
        return new Completed(Reply.fromWire(r.getCompleted()));
      default:
        return null;
    }
  }

  static Started started(contextd.v1.Interact.TurnStarted s) {
    return new Started(s.getTurnId(), s.getSessionId(), s.getSessionCreated());
  }

  static ServerToolRan serverToolRan(contextd.v1.Interact.ToolResultEvent e) {
    return new ServerToolRan(ToolCall.fromWire(e.getToolCall()), ToolResult.fromWire(e.getResult()));
  }
}
