package dev.contextd.client;

/**
 * Token counts.
 *
 * @param inputTokens tokens sent to the model, summed over every model call
 * @param outputTokens tokens the model generated
 * @param contextTokens size of the last context window
 */
public record Usage(long inputTokens, long outputTokens, long contextTokens) {
  static Usage fromWire(contextd.v1.Common.Usage u) {
    return new Usage(u.getInputTokens(), u.getOutputTokens(), u.getContextTokens());
  }
}
