package dev.contextd.client;

import contextd.v1.Common.MessageRole;
import java.time.Instant;
import java.util.List;

/**
 * One message of a session's history.
 *
 * @param index position in the history, from 0
 * @param role who wrote it
 * @param content its text (for a tool message, the tool's result)
 * @param toolCalls for an assistant message, the tools it asked for
 * @param toolCallId for a tool message, the call it answers
 * @param toolName for a tool message, the tool that ran
 * @param isError for a tool message, whether the tool failed
 * @param createTime when it was stored
 * @param tokenCount its cost in tokens
 * @param turnId the turn that produced it
 */
public record Message(
    long index,
    MessageRole role,
    String content,
    List<ToolCall> toolCalls,
    String toolCallId,
    String toolName,
    boolean isError,
    Instant createTime,
    int tokenCount,
    String turnId) {

  static Message fromWire(contextd.v1.Common.Message m) {
    return new Message(
        m.getIndex(),
        m.getRole(),
        m.getContent(),
        m.getToolCallsList().stream().map(ToolCall::fromWire).toList(),
        m.getToolCallId(),
        m.getToolName(),
        m.getIsError(),
        Instant.ofEpochSecond(m.getCreateTime().getSeconds(), m.getCreateTime().getNanos()),
        m.getTokenCount(),
        m.getTurnId());
  }
}
