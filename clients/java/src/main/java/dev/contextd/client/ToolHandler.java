package dev.contextd.client;

/**
 * Runs a client-side tool call for a {@link Conversation}. The returned text goes to the model;
 * an exception becomes a failed result ({@code is_error}) with the exception's message, so the
 * model sees the failure and the turn goes on.
 */
@FunctionalInterface
public interface ToolHandler {
  /** Runs the call and returns what the model reads. */
  String handle(ToolCall call) throws Exception;
}
