package dev.contextd.client;

import java.util.List;
import java.util.Map;

/**
 * What a client sends to run (or continue) a turn.
 *
 * @param sessionId the session; created when it does not exist yet
 * @param message the user's text; may be empty only with tool results
 * @param context an RFC 7386 merge patch applied to the session's context first (may be null)
 * @param toolResults results for every call a paused turn waits for
 * @param idempotencyKey makes the turn safe to repeat (may be null): a repeat with the same key
 *     on the session, within the server's {@code limits.idempotency_window}, gets the first
 *     attempt's outcome instead of a second turn; use a fresh key (a UUID) per new message and
 *     the same one for its retries
 * @param abandonToolCalls abandons the turn paused for client-side tools instead (with no
 *     message and no tool results): every pending call gets the error result "cancelled by the
 *     client", the turn ends with {@code FINISH_REASON_CANCELLED} without another model step,
 *     and the session is idle again; INVALID_ARGUMENT when nothing is pending
 */
public record Turn(
    String sessionId,
    String message,
    Map<String, ?> context,
    List<ToolResult> toolResults,
    String idempotencyKey,
    boolean abandonToolCalls) {
  /** A turn that does not abandon a paused one. */
  public Turn(String sessionId, String message, Map<String, ?> context, List<ToolResult> toolResults, String idempotencyKey) {
    this(sessionId, message, context, toolResults, idempotencyKey, false);
  }

  /** A turn without an idempotency key. */
  public Turn(String sessionId, String message, Map<String, ?> context, List<ToolResult> toolResults) {
    this(sessionId, message, context, toolResults, null);
  }

  /** This turn with {@code key} as its idempotency key. */
  public Turn withIdempotencyKey(String key) {
    return new Turn(sessionId, message, context, toolResults, key, abandonToolCalls);
  }

  /** Abandons the session's paused turn (see {@link #abandonToolCalls()}). */
  public static Turn abandon(String sessionId) {
    return new Turn(sessionId, "", null, List.of(), null, true);
  }

  /** A user message without context. */
  public static Turn of(String sessionId, String message) {
    return new Turn(sessionId, message, null, List.of());
  }

  /** A user message with a context patch. */
  public static Turn of(String sessionId, String message, Map<String, ?> context) {
    return new Turn(sessionId, message, context, List.of());
  }

  /** Tool results that continue a paused turn. */
  public static Turn toolResults(String sessionId, List<ToolResult> results) {
    return new Turn(sessionId, "", null, results);
  }
}
