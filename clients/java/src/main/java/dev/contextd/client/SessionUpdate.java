package dev.contextd.client;

import contextd.v1.Common.WindowSettings;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Changes to a session; what is not set stays as it is. */
public final class SessionUpdate {
  Map<String, ?> context;
  String systemPrompt;
  List<Tool> tools;
  String model;
  Integer maxContextTokens;
  String etag;
  Instant expireTime;
  WindowSettings window;
  List<String> serverTools;
  boolean resetServerTools;
  final Map<String, String> labels = new LinkedHashMap<>();
  final List<String> removeLabels = new ArrayList<>();

  /** An empty update. */
  public static SessionUpdate create() {
    return new SessionUpdate();
  }

  /**
   * Merges an RFC 7386 patch into the context: nested maps merge, a {@code null} value deletes
   * the key.
   */
  public SessionUpdate context(Map<String, ?> patch) {
    this.context = patch;
    return this;
  }

  /** Replaces the system prompt. */
  public SessionUpdate systemPrompt(String systemPrompt) {
    this.systemPrompt = systemPrompt;
    return this;
  }

  /** Replaces the client-declared tools (none: removes them all). */
  public SessionUpdate tools(Tool... tools) {
    this.tools = List.of(tools);
    return this;
  }

  /** Replaces the model. */
  public SessionUpdate model(String model) {
    this.model = model;
    return this;
  }

  /** Replaces the window size (0: the model's default). */
  public SessionUpdate maxContextTokens(int maxContextTokens) {
    this.maxContextTokens = maxContextTokens;
    return this;
  }

  /** Adds or replaces a label. */
  public SessionUpdate label(String key, String value) {
    labels.put(key, value);
    return this;
  }

  /** Removes a label. */
  public SessionUpdate removeLabel(String key) {
    removeLabels.add(key);
    return this;
  }

  /**
   * Applies the update only while the session's etag is still {@code etag} (ABORTED otherwise).
   */
  public SessionUpdate etag(String etag) {
    this.etag = etag;
    return this;
  }

  /** Sets a new fixed expiry. */
  public SessionUpdate expireTime(Instant expireTime) {
    this.expireTime = expireTime;
    return this;
  }

  /** Replaces the window settings (the running summary is kept). */
  public SessionUpdate window(WindowSettings window) {
    this.window = window;
    return this;
  }

  /** Replaces the server-side tools offered to the model (names or {@code *} patterns; empty: none). */
  public SessionUpdate serverTools(List<String> patterns) {
    this.serverTools = List.copyOf(patterns);
    return this;
  }

  /**
   * Forgets the session's own server-side tool selection, so it is offered the server's {@code
   * engine.default_server_tools} again (INVALID_ARGUMENT together with {@link #serverTools}).
   */
  public SessionUpdate resetServerTools() {
    this.resetServerTools = true;
    return this;
  }
}
