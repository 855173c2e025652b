package dev.contextd.client;

/**
 * What a server-side tool returned.
 *
 * @param content the result as text
 * @param structured the result as JSON (Map, List, String, Double, Boolean or null)
 * @param isError true when the tool ran and failed; {@code content} says why
 */
public record ToolOutput(String content, Object structured, boolean isError) {}
