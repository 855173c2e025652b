package dev.contextd.client;

import java.util.List;

/**
 * One page of a session's history.
 *
 * @param messages the messages, oldest first
 * @param nextPageToken fetches the next page; empty on the last page
 */
public record MessagePage(List<Message> messages, String nextPageToken) {}
