package dev.contextd.client;

import contextd.v1.Common.ToolDefinition;
import java.util.Map;

/**
 * A tool the model may ask for: declared by the client (which runs it) or listed by the server.
 *
 * @param name 1 to 64 characters of {@code [A-Za-z0-9_-]}, unique within a session
 * @param description what the tool does, written for the model
 * @param inputSchema JSON Schema of the arguments; empty means any object
 * @param annotations hints about the tool's behaviour in the shape of MCP's {@code
 *     ToolAnnotations} ({@code title}, {@code readOnlyHint}, ...); empty means none. contextd
 *     never acts on them; on an MCP server's tools they are that server's word, unverified.
 */
public record Tool(
    String name, String description, Map<String, Object> inputSchema, Map<String, Object> annotations) {
  /** A tool without annotations. */
  public Tool(String name, String description, Map<String, Object> inputSchema) {
    this(name, description, inputSchema, Map.of());
  }

  /** A tool whose arguments may be any object. */
  public static Tool of(String name, String description) {
    return new Tool(name, description, Map.of());
  }

  /** The same tool with {@code annotations}. */
  public Tool withAnnotations(Map<String, Object> annotations) {
    return new Tool(name, description, inputSchema, annotations);
  }

  ToolDefinition toWire() {
    ToolDefinition.Builder b = ToolDefinition.newBuilder().setName(name).setDescription(description == null ? "" : description);
    if (inputSchema != null && !inputSchema.isEmpty()) {
      b.setInputSchema(Values.toStruct(inputSchema));
    }
    if (annotations != null && !annotations.isEmpty()) {
      b.setAnnotations(Values.toStruct(annotations));
    }
    return b.build();
  }

  static Tool fromWire(ToolDefinition t) {
    return new Tool(
        t.getName(),
        t.getDescription(),
        Values.fromStruct(t.getInputSchema()),
        Values.fromStruct(t.getAnnotations()));
  }
}
