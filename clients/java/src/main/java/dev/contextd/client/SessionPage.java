package dev.contextd.client;

import java.util.List;

/**
 * One page of sessions.
 *
 * @param sessions the sessions, ordered by id
 * @param nextPageToken fetches the next page; empty on the last page
 */
public record SessionPage(List<Session> sessions, String nextPageToken) {}
