package dev.contextd.client;

import contextd.v1.Common.WindowSettings;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Describes a new session (for {@code createSession} and {@code converse}). */
public final class SessionOptions {
  String id = "";
  String systemPrompt = "";
  Map<String, ?> context;
  String model = "";
  final List<Tool> tools = new ArrayList<>();
  final Map<String, String> labels = new LinkedHashMap<>();
  int maxContextTokens;
  Instant expireTime;
  WindowSettings window;
  List<String> serverTools;

  private SessionOptions() {}

  /** Options for a session with this id (empty: the server picks one on create). */
  public static SessionOptions id(String id) {
    SessionOptions o = new SessionOptions();
    o.id = id;
    return o;
  }

  /** Sets the system prompt. */
  public SessionOptions systemPrompt(String systemPrompt) {
    this.systemPrompt = systemPrompt;
    return this;
  }

  /** Sets the initial context. */
  public SessionOptions context(Map<String, ?> context) {
    this.context = context;
    return this;
  }

  /** Sets the model (empty: the server default). */
  public SessionOptions model(String model) {
    this.model = model;
    return this;
  }

  /** Adds client-declared tools. */
  public SessionOptions tools(Tool... tools) {
    this.tools.addAll(List.of(tools));
    return this;
  }

  /** Sets a label. */
  public SessionOptions label(String key, String value) {
    labels.put(key, value);
    return this;
  }

  /** Sets the window size in tokens (0: the model's default). */
  public SessionOptions maxContextTokens(int maxContextTokens) {
    this.maxContextTokens = maxContextTokens;
    return this;
  }

  /** Sets when the session expires (in the future); unset: the server's idle session TTL. */
  public SessionOptions expireTime(Instant expireTime) {
    this.expireTime = expireTime;
    return this;
  }

  /** Sets how the context window is managed; unset: sliding window. */
  public SessionOptions window(WindowSettings window) {
    this.window = window;
    return this;
  }

  /**
   * Sets the server-side tools offered to the model: names or {@code *} patterns such as {@code
   * time__*} (an empty list: none); unset: the server's {@code engine.default_server_tools}.
   */
  public SessionOptions serverTools(List<String> patterns) {
    this.serverTools = List.copyOf(patterns);
    return this;
  }
}
