package dev.contextd.client;

import contextd.v1.Common.FinishReason;
import contextd.v1.Interact.InteractResponse;
import java.util.List;
import java.util.Map;

/**
 * The outcome of a turn.
 *
 * @param sessionId the session the turn ran on
 * @param text the assistant's reply
 * @param context the session's context after the turn
 * @param finishReason why the turn ended
 * @param toolCalls the client-side tools to run when the turn paused for them
 * @param usage tokens the turn used
 * @param sessionCreated whether the turn created the session
 * @param turnId the turn's id (kept when a paused turn continues)
 */
public record Reply(
    String sessionId,
    String text,
    Map<String, Object> context,
    FinishReason finishReason,
    List<ToolCall> toolCalls,
    Usage usage,
    boolean sessionCreated,
    String turnId) {

  /** True when the turn paused for the client-side tools in {@link #toolCalls()}. */
  public boolean needsToolResults() {
    return finishReason == FinishReason.FINISH_REASON_TOOL_CALLS;
  }

  static Reply fromWire(InteractResponse r) {
    return new Reply(
        r.getSessionId(),
        r.getResponse(),
        Values.fromStruct(r.getUpdatedContext()),
        r.getFinishReason(),
        r.getToolCallsList().stream().map(ToolCall::fromWire).toList(),
        Usage.fromWire(r.getUsage()),
        r.getSessionCreated(),
        r.getTurnId());
  }
}
