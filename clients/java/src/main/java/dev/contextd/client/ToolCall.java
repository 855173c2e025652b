package dev.contextd.client;

import java.util.Map;

/**
 * The model's request to run one tool.
 *
 * @param id identifies the call; a {@link ToolResult} answers it by this id
 * @param name the tool to run
 * @param arguments the JSON object the model passed
 */
public record ToolCall(String id, String name, Map<String, Object> arguments) {
  static ToolCall fromWire(contextd.v1.Common.ToolCall c) {
    return new ToolCall(c.getToolCallId(), c.getName(), Values.fromStruct(c.getArguments()));
  }
}
