package dev.contextd.client;

import java.util.List;

/**
 * What {@code listTools} returns.
 *
 * @param server the tools contextd runs itself
 * @param session the client-declared tools of the session asked about
 * @param offered names of every tool the session asked about offers its model (selected
 *     server-side tools, then its own), in the order the model sees them
 */
public record ToolList(List<Tool> server, List<Tool> session, List<String> offered) {}
