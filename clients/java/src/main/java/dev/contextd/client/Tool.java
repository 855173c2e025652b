package dev.contextd.client;

import contextd.v1.Common.ToolDefinition;
import java.util.Map;

/**
 * A tool the model may ask for: declared by the client (which runs it) or listed by the server.
 *
 * @param name 1 to 64 characters of {@code [A-Za-z0-9_-]}, unique within a session
 * @param description what the tool does, written for the model
 * @param inputSchema JSON Schema of the arguments; empty means any object
 */
public record Tool(String name, String description, Map<String, Object> inputSchema) {
  /** A tool whose arguments may be any object. */
  public static Tool of(String name, String description) {
    return new Tool(name, description, Map.of());
  }

  ToolDefinition toWire() {
    ToolDefinition.Builder b = ToolDefinition.newBuilder().setName(name).setDescription(description == null ? "" : description);
    if (inputSchema != null && !inputSchema.isEmpty()) {
      b.setInputSchema(Values.toStruct(inputSchema));
    }
    return b.build();
  }

  static Tool fromWire(ToolDefinition t) {
    return new Tool(t.getName(), t.getDescription(), Values.fromStruct(t.getInputSchema()));
  }
}
