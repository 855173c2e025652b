package dev.contextd.client;

import java.util.List;

/**
 * What {@code listTools} returns.
 *
 * @param server the tools contextd runs itself
 * @param session the client-declared tools of the session asked about
 */
public record ToolList(List<Tool> server, List<Tool> session) {}
