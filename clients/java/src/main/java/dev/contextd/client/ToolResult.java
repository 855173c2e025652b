package dev.contextd.client;

/**
 * The outcome of one tool call, sent back to the model.
 *
 * @param callId the {@link ToolCall#id()} this answers
 * @param content what the tool returned, as text for the model
 * @param isError true when the tool ran and failed; {@code content} says why
 */
public record ToolResult(String callId, String content, boolean isError) {
  /** A successful result. */
  public static ToolResult ok(String callId, String content) {
    return new ToolResult(callId, content, false);
  }

  /** A failed result: the model sees the failure and may recover. */
  public static ToolResult error(String callId, String message) {
    return new ToolResult(callId, message, true);
  }

  contextd.v1.Common.ToolResult toWire() {
    return contextd.v1.Common.ToolResult.newBuilder().setToolCallId(callId).setContent(content == null ? "" : content).setIsError(isError).build();
  }

  static ToolResult fromWire(contextd.v1.Common.ToolResult r) {
    return new ToolResult(r.getToolCallId(), r.getContent(), r.getIsError());
  }
}
