package dev.contextd.client;

import contextd.v1.Common.ContextSummary;
import contextd.v1.Common.WindowSettings;
import contextd.v1.Common.SessionState;
import java.time.Instant;
import java.util.List;
import java.util.Map;

/**
 * A conversation kept by contextd.
 *
 * @param id the session id
 * @param systemPrompt instructions always shown to the model first
 * @param context the merged structured context
 * @param model the model answering in the session
 * @param tools the client-declared tools
 * @param labels the client's own labels
 * @param createTime when the session was created
 * @param updateTime when it last changed
 * @param messageCount number of history messages
 * @param state whether it waits for tool results
 * @param pendingToolCalls the calls it waits for
 * @param usage tokens used so far
 * @param maxContextTokens window size in tokens
 * @param etag changes with every write; pass it to {@link SessionUpdate#etag} or {@link
 *     ContextdClient#deleteSession(String, String)} to make the change conditional (ABORTED when
 *     the session changed meanwhile)
 * @param serverTools names or {@code *} patterns of the server-side tools offered to its model;
 *     null: the server's {@code engine.default_server_tools}
 */
public record Session(
    String id,
    String systemPrompt,
    Map<String, Object> context,
    String model,
    List<Tool> tools,
    Map<String, String> labels,
    Instant createTime,
    Instant updateTime,
    long messageCount,
    SessionState state,
    List<ToolCall> pendingToolCalls,
    Usage usage,
    int maxContextTokens,
    Instant expireTime,
    WindowSettings window,
    ContextSummary summary,
    double tokenEstimateScale,
    String etag,
    List<String> serverTools) {

  /** True when the session waits for results of {@link #pendingToolCalls()}. */
  public boolean awaitingToolResults() {
    return state == SessionState.SESSION_STATE_AWAITING_TOOL_RESULTS;
  }

  static Session fromWire(contextd.v1.Common.Session s) {
    return new Session(
        s.getSessionId(),
        s.getSystemPrompt(),
        Values.fromStruct(s.getContext()),
        s.getModel(),
        s.getToolsList().stream().map(Tool::fromWire).toList(),
        Map.copyOf(s.getLabelsMap()),
        Instant.ofEpochSecond(s.getCreateTime().getSeconds(), s.getCreateTime().getNanos()),
        Instant.ofEpochSecond(s.getUpdateTime().getSeconds(), s.getUpdateTime().getNanos()),
        s.getMessageCount(),
        s.getState(),
        s.getPendingToolCallsList().stream().map(ToolCall::fromWire).toList(),
        Usage.fromWire(s.getUsage()),
        s.getMaxContextTokens(),
        s.hasExpireTime() ? Instant.ofEpochSecond(s.getExpireTime().getSeconds(), s.getExpireTime().getNanos()) : null,
        s.getWindow(),
        s.hasSummary() ? s.getSummary() : null,
        s.getTokenEstimateScale(),
        s.getEtag(),
        s.hasServerTools() ? List.copyOf(s.getServerTools().getPatternsList()) : null);
  }
}
