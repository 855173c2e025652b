package dev.contextd.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import contextd.v1.Common.FinishReason;
import contextd.v1.Common.MessageRole;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.function.Executable;

/** The wrapper against a real contextd; every test uses session ids of its own. */
class ContextdClientTest {
  private static final AtomicLong COUNTER = new AtomicLong();
  private static final Tool WEATHER = new Tool("get_weather", "Current weather of a city",
      Map.of("type", "object", "properties", Map.of("city", Map.of("type", "string"))));

  private static TestServer server;
  private ContextdClient client;
  private String prefix;

  @BeforeAll
  static void startServer() throws Exception {
    server = TestServer.start();
  }

  @AfterAll
  static void stopServer() throws Exception {
    server.close();
  }

  @BeforeEach
  void connect(TestInfo info) {
    client = ContextdClient.builder(server.address()).build();
    prefix = info.getTestMethod().orElseThrow().getName() + "-" + COUNTER.incrementAndGet() + "-" + System.nanoTime();
  }

  @AfterEach
  void disconnect() {
    client.close();
  }

  private String id(String name) {
    return prefix + "-" + name;
  }

  static void assertCode(Status.Code code, Executable call) {
    StatusRuntimeException e = assertThrows(StatusRuntimeException.class, call);
    assertEquals(code, e.getStatus().getCode(), () -> "status: " + e.getStatus());
  }

  @Test
  void sessionLifecycle() {
    String sid = id("s");
    Map<String, Object> user = new HashMap<>();
    user.put("name", "Ann");
    user.put("city", "Oslo");
    Session created = client.createSession(SessionOptions.id(sid)
        .context(Map.of("user", user, "tags", List.of("a", "b")))
        .tools(WEATHER)
        .label("team", "blue"));
    assertEquals(sid, created.id());
    assertEquals("echo", created.model());
    assertEquals(Map.of("team", "blue"), created.labels());
    assertEquals(List.of("a", "b"), created.context().get("tags"));
    assertEquals("get_weather", created.tools().get(0).name());
    assertCode(Status.Code.ALREADY_EXISTS, () -> client.createSession(SessionOptions.id(sid)));

    Map<String, Object> patch = new HashMap<>();
    patch.put("city", null);
    patch.put("lang", "no");
    Session updated = client.updateSession(sid, SessionUpdate.create()
        .context(Map.of("user", patch))
        .systemPrompt("Be brief.")
        .label("env", "test")
        .removeLabel("team"));
    assertEquals(Map.of("name", "Ann", "lang", "no"), updated.context().get("user"));
    assertEquals("Be brief.", updated.systemPrompt());
    assertEquals(Map.of("env", "test"), updated.labels());

    Reply reply = client.interact(Turn.of(sid, "hi"));
    assertFalse(reply.sessionCreated());
    assertEquals(FinishReason.FINISH_REASON_STOP, reply.finishReason());
    Session after = client.getSession(sid);
    assertEquals(2, after.messageCount());
    assertTrue(after.usage().inputTokens() > 0);

    List<Message> messages = client.listMessages(sid);
    assertEquals(2, messages.size());
    assertEquals(MessageRole.MESSAGE_ROLE_USER, messages.get(0).role());
    assertEquals("hi", messages.get(0).content());
    assertEquals(MessageRole.MESSAGE_ROLE_ASSISTANT, messages.get(1).role());
    assertEquals(reply.text(), messages.get(1).content());

    assertTrue(client.sessions().anyMatch(s -> s.id().equals(sid)));
    assertEquals(2, client.deleteSession(sid));
    assertCode(Status.Code.NOT_FOUND, () -> client.getSession(sid));
    assertCode(Status.Code.NOT_FOUND, () -> client.listMessages(sid));
  }

  @Test
  void listSessionsInPages() {
    for (int i = 0; i < 5; i++) {
      client.createSession(SessionOptions.id(id("p" + i)));
    }
    List<String> seen = new ArrayList<>();
    String token = "";
    do {
      SessionPage page = client.listSessions(2, token);
      assertTrue(page.sessions().size() <= 2);
      page.sessions().stream().map(Session::id).filter(s -> s.startsWith(prefix)).forEach(seen::add);
      token = page.nextPageToken();
    } while (!token.isEmpty());
    assertEquals(5, seen.size(), seen::toString);
  }

  @Test
  void idempotencyKeysMakeTurnsSafeToRepeat() {
    String sid = id("idem");
    Turn turn = Turn.of(sid, "only once").withIdempotencyKey(sid + "-key");
    Reply first = client.interact(turn);
    Reply again = client.interact(turn);
    assertEquals(first.turnId(), again.turnId());
    assertEquals(first.text(), again.text());
    try (EventStream events = client.streamResponse(turn)) {
      assertEquals(first.turnId(), events.reply().turnId());
    }
    try (Conversation conv = client.converse(SessionOptions.id(sid), null)) {
      assertEquals(first.turnId(), conv.send("only once", null, turn.idempotencyKey()).reply().turnId());
    }
    assertCode(
        Status.Code.INVALID_ARGUMENT,
        () -> client.interact(Turn.of(sid, "another request").withIdempotencyKey(turn.idempotencyKey())));
    assertEquals(2, client.getSession(sid).messageCount());
  }

  @Test
  void interactMergesContext() {
    String sid = id("alpha");
    Reply first = client.interact(Turn.of(sid, "Hello, I am John.", Map.of("user_id", "john_doe")));
    assertEquals("You said 'Hello, I am John.'. User john_doe is active.", first.text());
    assertTrue(first.sessionCreated());
    assertFalse(first.turnId().isEmpty());
    Reply second = client.interact(Turn.of(sid, "Tell me about climate change.", Map.of("topic", "environment")));
    assertEquals(Map.of("user_id", "john_doe", "topic", "environment"), second.context());
    assertTrue(second.text().contains("Current topic: environment."), second.text());
  }

  @Test
  void streamResponseEvents() {
    String sid = id("s");
    List<String> kinds = new ArrayList<>();
    StringBuilder text = new StringBuilder();
    Reply reply = null;
    try (EventStream events = client.streamResponse(Turn.of(sid, "one two three", Map.of("topic", "x")))) {
      for (Event e : events) {
        if (e instanceof Event.Started s) {
          kinds.add("started");
          assertEquals(sid, s.sessionId());
          assertTrue(s.sessionCreated());
        } else if (e instanceof Event.Delta d) {
          if (kinds.isEmpty() || !kinds.get(kinds.size() - 1).equals("delta")) {
            kinds.add("delta");
          }
          text.append(d.text());
        } else if (e instanceof Event.Completed c) {
          kinds.add("completed");
          reply = c.reply();
        }
      }
    }
    assertEquals(List.of("started", "delta", "completed"), kinds);
    assertNotNull(reply);
    assertEquals("You said 'one two three'. Current topic: x.", reply.text());
    assertEquals(reply.text(), text.toString());
  }

  @Test
  void streamResponseAsStreamWithServerTool() {
    List<Event> events;
    try (var stream = client.streamResponse(Turn.of(id("s"), "/call context_set {\"patch\": {\"mood\": \"good\"}}")).stream()) {
      events = stream.collect(Collectors.toList());
    }
    Event.ServerToolRan ran = events.stream().filter(Event.ServerToolRan.class::isInstance).map(Event.ServerToolRan.class::cast)
        .findFirst().orElseThrow();
    assertEquals("context_set", ran.call().name());
    assertFalse(ran.result().isError());
    Event.Completed done = assertInstanceOf(Event.Completed.class, events.get(events.size() - 1));
    assertEquals("good", done.reply().context().get("mood"));
  }

  @Test
  void closingAStreamEarlyCancelsTheTurn() {
    String sid = id("s");
    client.interact(Turn.of(sid, "first"));
    try (EventStream events = client.streamResponse(Turn.of(sid, "/delay 200 a b c d e f g h"))) {
      while (events.hasNext()) {
        if (events.next() instanceof Event.Delta) {
          break;
        }
      }
    }
    // Turns on a session run one at a time: this one starts once the abandoned one is gone.
    client.interact(Turn.of(sid, "third"));
    List<String> users = client.listMessages(sid).stream().filter(m -> m.role() == MessageRole.MESSAGE_ROLE_USER)
        .map(Message::content).toList();
    assertEquals(List.of("first", "third"), users);
  }

  @Test
  void interactToolRoundTrip() {
    String sid = id("s");
    client.createSession(SessionOptions.id(sid).tools(WEATHER));
    Reply paused = client.interact(Turn.of(sid, "/call get_weather {\"city\": \"Paris\"}"));
    assertTrue(paused.needsToolResults());
    assertEquals(1, paused.toolCalls().size());
    assertEquals(Map.of("city", "Paris"), paused.toolCalls().get(0).arguments());
    Session s = client.getSession(sid);
    assertTrue(s.awaitingToolResults());
    assertEquals(paused.toolCalls(), s.pendingToolCalls());
    assertCode(Status.Code.FAILED_PRECONDITION, () -> client.interact(Turn.of(sid, "something else")));
    Reply done = client.interact(Turn.toolResults(sid, List.of(ToolResult.ok(paused.toolCalls().get(0).id(), "sunny"))));
    assertEquals("Tool get_weather returned: sunny", done.text());
    assertEquals(paused.turnId(), done.turnId());
  }

  @Test
  void converseAnswersToolCallsWithTheHandler() {
    List<ToolCall> calls = new ArrayList<>();
    ToolHandler handler = call -> {
      calls.add(call);
      String city = (String) call.arguments().get("city");
      if (city.equals("Atlantis")) {
        throw new IllegalArgumentException("no such city");
      }
      return "sunny in " + city;
    };
    try (Conversation conv = client.converse(SessionOptions.id(id("c")).tools(WEATHER).context(Map.of("user_id", "ann")), handler)) {
      assertTrue(conv.created());
      assertEquals("ann", conv.session().context().get("user_id"));
      Reply reply = conv.say("/call get_weather {\"city\": \"Paris\"}");
      assertEquals("Tool get_weather returned: sunny in Paris", reply.text());
      assertEquals(FinishReason.FINISH_REASON_STOP, reply.finishReason());
      // Two calls in one step, one failing: both answered in one tool_results frame.
      reply = conv.say("/call get_weather {\"city\": \"Rome\"}\n/call get_weather {\"city\": \"Atlantis\"}", Map.of("topic", "travel"));
      assertTrue(reply.text().contains("Tool get_weather returned: sunny in Rome"), reply.text());
      assertTrue(reply.text().contains("failed: no such city"), reply.text());
      assertEquals("travel", reply.context().get("topic"));
      assertEquals(3, calls.size());
    }
  }

  @Test
  void converseWithoutHandlerPausesForResults() {
    try (Conversation conv = client.converse(SessionOptions.id(id("c")).tools(WEATHER), null)) {
      List<ToolCall> requested = new ArrayList<>();
      Reply paused = null;
      for (Event e : conv.send("/call get_weather {\"city\": \"Oslo\"}", null)) {
        if (e instanceof Event.ToolCallRequested r) {
          requested.add(r.call());
        } else if (e instanceof Event.Completed c) {
          paused = c.reply();
        }
      }
      assertEquals(1, requested.size());
      assertNotNull(paused);
      assertTrue(paused.needsToolResults());
      // A new message while results are pending is refused; the stream stays usable.
      TurnErrorException refused = assertThrows(TurnErrorException.class, () -> conv.say("hello?"));
      assertEquals(Status.Code.FAILED_PRECONDITION, refused.getStatus().getCode());
      assertTrue(refused.getStatus().getDescription().contains(requested.get(0).id()), refused.getStatus().toString());
      Reply reply = conv.sendToolResults(List.of(ToolResult.ok(requested.get(0).id(), "snow"))).reply();
      assertEquals("Tool get_weather returned: snow", reply.text());
    }
  }

  @Test
  void abandoningAPausedTurn() {
    String sid = id("abandon");
    client.createSession(SessionOptions.id(sid).tools(WEATHER));
    Reply paused = client.interact(Turn.of(sid, "/call get_weather {\"city\": \"Oslo\"}"));
    assertTrue(paused.needsToolResults());
    Reply done = client.interact(Turn.abandon(sid));
    assertEquals(FinishReason.FINISH_REASON_CANCELLED, done.finishReason());
    assertEquals(paused.turnId(), done.turnId());
    assertEquals("", done.text());
    assertFalse(client.getSession(sid).awaitingToolResults());
    assertCode(Status.Code.INVALID_ARGUMENT, () -> client.interact(Turn.abandon(sid)));

    client.interact(Turn.of(sid, "/call get_weather {\"city\": \"Rome\"}"));
    assertEquals(FinishReason.FINISH_REASON_CANCELLED, client.streamResponse(Turn.abandon(sid)).reply().finishReason());

    try (Conversation conv = client.converse(SessionOptions.id(sid), null)) {
      assertTrue(conv.say("/call get_weather {\"city\": \"Lima\"}").needsToolResults());
      assertEquals(FinishReason.FINISH_REASON_CANCELLED, conv.abandonToolCalls().finishReason());
      assertEquals("You said 'next'.", conv.say("next").text());
      // cancel() while paused abandons too; the next turn's reply is its own.
      assertTrue(conv.say("/call get_weather {\"city\": \"Kyiv\"}").needsToolResults());
      conv.cancel();
      assertEquals("You said 'and now'.", conv.say("and now").text());
      TurnErrorException nothing = assertThrows(TurnErrorException.class, conv::abandonToolCalls);
      assertEquals(Status.Code.FAILED_PRECONDITION, nothing.getStatus().getCode());
    }
    List<Message> results = client.listMessages(sid).stream().filter(m -> m.role() == MessageRole.MESSAGE_ROLE_TOOL).toList();
    assertEquals(4, results.size());
    for (Message m : results) {
      assertEquals("cancelled by the client", m.content());
      assertTrue(m.isError());
    }
  }

  @Test
  void leavingAConverseTurnEarlyCancelsIt() {
    String sid = id("c");
    StringBuilder slow = new StringBuilder("/delay 1000");
    for (int i = 0; i < 20; i++) {
      slow.append(" w").append(i);
    }
    try (Conversation conv = client.converse(SessionOptions.id(sid), null)) {
      try (EventStream events = conv.send(slow.toString(), null)) {
        for (Event e : events) {
          if (e instanceof Event.Delta) {
            break;
          }
        }
      }
      assertEquals("You said 'one'.", conv.say("one").text());
      // Left without close: the next send ends it first.
      for (Event e : conv.send(slow.toString(), null)) {
        if (e instanceof Event.Delta) {
          break;
        }
      }
      assertEquals("You said 'two'.", conv.say("two").text());
    }
    List<Message> stored = client.listMessages(sid);
    assertEquals(List.of("one", "You said 'one'.", "two", "You said 'two'."),
        stored.stream().map(Message::content).toList());
  }

  /**
   * An abandon refused with FAILED_PRECONDITION (an error outside any turn, with an empty turn
   * id, like the answer to a stray cancel) must neither be taken for a stray cancel's answer
   * nor leave one unread: the next turn's reply is its own.
   */
  @Test
  void aFailedAbandonDoesNotConfuseLeavingATurnEarly() {
    String sid = id("c");
    try (Conversation conv = client.converse(SessionOptions.id(sid).tools(WEATHER), null)) {
      // A fast turn left at its start: the cancel finds it running or already over (then it is
      // answered outside any turn). Several rounds meet both cases on most machines.
      for (int round = 0; round < 5; round++) {
        try (EventStream events = conv.send("a b c", null)) {
          events.next();
        }
        TurnErrorException refused = assertThrows(TurnErrorException.class, conv::abandonToolCalls);
        assertEquals(Status.Code.FAILED_PRECONDITION, refused.getStatus().getCode());
        assertEquals("You said 'next " + round + "'.", conv.say("next " + round).text());
      }
      // The paused turn abandoned elsewhere: this stream's cancel still believes it paused, and
      // its abandon is refused outside any turn; a turn left early after it reads only its own.
      assertTrue(conv.say("/call get_weather {\"city\": \"Oslo\"}").needsToolResults());
      client.interact(Turn.abandon(sid));
      conv.cancel();
      try (EventStream events = conv.send("/delay 1000 w0 w1 w2 w3 w4 w5 w6 w7 w8 w9", null)) {
        while (events.hasNext()) {
          if (events.next() instanceof Event.Delta) {
            break;
          }
        }
      }
      assertEquals("You said 'after'.", conv.say("after").text());
    }
  }

  @Test
  void windowExpiryModelsAndPages() {
    String sid = id("w");
    java.time.Instant expires = java.time.Instant.now().plusSeconds(3600).truncatedTo(java.time.temporal.ChronoUnit.SECONDS);
    contextd.v1.Common.WindowSettings window = contextd.v1.Common.WindowSettings.newBuilder()
        .setStrategy(contextd.v1.Common.WindowStrategy.WINDOW_STRATEGY_SUMMARIZE).setSummarizeThresholdPercent(50).build();
    Session s = client.createSession(SessionOptions.id(sid).expireTime(expires).window(window));
    assertEquals(expires, s.expireTime());
    assertEquals(window, s.window());
    assertEquals(null, s.summary());
    java.time.Instant later = expires.plusSeconds(3600);
    Session u = client.updateSession(sid, SessionUpdate.create().expireTime(later)
        .window(contextd.v1.Common.WindowSettings.newBuilder().setStrategy(contextd.v1.Common.WindowStrategy.WINDOW_STRATEGY_DISABLED).build()));
    assertEquals(later, u.expireTime());
    assertEquals(contextd.v1.Common.WindowStrategy.WINDOW_STRATEGY_DISABLED, u.window().getStrategy());
    assertEquals("echo", client.listModels().getDefaultModel());
    client.interact(Turn.of(sid, "a"));
    client.interact(Turn.of(sid, "b"));
    MessagePage page = client.listMessages(sid, 2, "");
    assertEquals(2, page.messages().size());
    assertFalse(page.nextPageToken().isEmpty());
    assertEquals(2, client.listMessages(sid, 2, page.nextPageToken()).messages().size());
  }

  @Test
  void previewShowsAPendingSummaryAndWritesItWhenAsked() {
    String sid = id("fold");
    String message = "the quick brown fox jumps over the lazy dog, and counts another turn";
    client.createSession(SessionOptions.id(sid).maxContextTokens(300).window(contextd.v1.Common.WindowSettings.newBuilder()
        .setStrategy(contextd.v1.Common.WindowStrategy.WINDOW_STRATEGY_SUMMARIZE).build()));
    java.util.function.Predicate<contextd.v1.Session.PreviewContextResponse> pending = p -> p.getEntriesList().stream()
        .anyMatch(e -> e.getKind() == contextd.v1.Session.ContextEntryKind.CONTEXT_ENTRY_KIND_PENDING_SUMMARY);
    int turns = 0;
    while (!pending.test(client.previewContext(sid, message, null))) {
      client.interact(Turn.of(sid, message));
      assertTrue(++turns < 60, "the window never reached its threshold");
    }
    assertEquals(null, client.getSession(sid).summary(), "a preview writes nothing by default");
    contextd.v1.Session.PreviewContextResponse written = client.previewContext(sid, message, null, true);
    assertTrue(written.getSummaryKept());
    assertFalse(pending.test(written));
    assertFalse(client.getSession(sid).summary().getText().isEmpty());
  }

  @Test
  void converseCancel() {
    String sid = id("c");
    try (Conversation conv = client.converse(SessionOptions.id(sid), null)) {
      // Cancelling with no turn running changes nothing and does not leak into the next turn.
      conv.cancel();
      assertEquals("You said 'ping'.", conv.say("ping").text());
      Reply last = null;
      for (Event e : conv.send("/delay 200 a b c d e f g h i j", null)) {
        if (e instanceof Event.Delta) {
          conv.cancel();
        } else if (e instanceof Event.Completed c) {
          last = c.reply();
        }
      }
      assertNotNull(last);
      assertEquals(FinishReason.FINISH_REASON_CANCELLED, last.finishReason());
      assertEquals("You said 'pong'.", conv.say("pong").text());
    }
    assertEquals(4, client.getSession(sid).messageCount(), "the cancelled turn must store nothing");
  }

  @Test
  void serverTools() {
    String sid = id("s");
    client.createSession(SessionOptions.id(sid).tools(WEATHER).context(Map.of("a", 1)));
    ToolList list = client.listTools(sid);
    assertEquals(List.of("context_get", "context_set", "history_search"), list.server().stream().map(Tool::name).toList());
    assertEquals(List.of("get_weather"), list.session().stream().map(Tool::name).toList());
    assertEquals(true, list.server().get(0).annotations().get("readOnlyHint"));
    Tool hinted = Tool.of("find", "Finds.").withAnnotations(Map.of("readOnlyHint", true));
    client.updateSession(sid, SessionUpdate.create().tools(hinted));
    assertEquals(Map.of("readOnlyHint", true), client.listTools(sid).session().get(0).annotations());
    client.updateSession(sid, SessionUpdate.create().tools(WEATHER));
    ToolOutput set = client.callTool("context_set", Map.of("patch", Map.of("b", "two")), sid);
    assertFalse(set.isError());
    assertEquals(Map.of("a", 1.0, "b", "two"), set.structured());
    ToolOutput missing = client.callTool("context_get", Map.of("key", "missing"), sid);
    assertTrue(missing.isError());
    assertFalse(missing.content().isEmpty());
    assertCode(Status.Code.NOT_FOUND, () -> client.callTool("no_such_tool", null, sid));
  }

  @Test
  void serverToolSelection() throws Exception {
    String sid = id("select");
    Session created = client.createSession(SessionOptions.id(sid).tools(WEATHER).serverTools(List.of("context_*")));
    assertEquals(List.of("context_*"), created.serverTools());
    assertEquals(List.of("context_get", "context_set", "get_weather"), client.listTools(sid).offered());
    Session updated = client.updateSession(sid, SessionUpdate.create().serverTools(List.of()));
    assertEquals(List.of(), updated.serverTools());
    assertEquals(List.of("get_weather"), client.listTools(sid).offered());
    assertCode(Status.Code.INVALID_ARGUMENT, () -> client.updateSession(sid, SessionUpdate.create().serverTools(List.of("time__*"))));
    assertCode(Status.Code.INVALID_ARGUMENT,
        () -> client.updateSession(sid, SessionUpdate.create().serverTools(List.of("context_get")).resetServerTools()));
    assertEquals(List.of(), client.getSession(sid).serverTools());
    Session reset = client.updateSession(sid, SessionUpdate.create().resetServerTools());
    assertNull(reset.serverTools());
    assertEquals(List.of("context_get", "context_set", "history_search", "get_weather"), client.listTools(sid).offered());
    try (Conversation conversation = client.converse(SessionOptions.id(id("select-open")).serverTools(List.of("history_search")), null)) {
      assertEquals(List.of("history_search"), conversation.session().serverTools());
    }
    ToolOutput violation = client.callTool("context_get", Map.of("city", "Paris"), sid);
    assertTrue(violation.isError());
    assertTrue(violation.content().contains("city"), violation.content());
  }

  @Test
  void errorsCarryTheirStatusCode() {
    assertCode(Status.Code.NOT_FOUND, () -> client.getSession(id("missing")));
    assertCode(Status.Code.INVALID_ARGUMENT, () -> client.interact(Turn.of("bad id with spaces", "hi")));
    assertCode(Status.Code.INVALID_ARGUMENT, () -> client.interact(Turn.of(id("s"), "")));
    assertCode(Status.Code.INVALID_ARGUMENT, () -> client.createSession(SessionOptions.id(id("s")).model("no-such-model")));
    // A context that is not JSON is refused before anything is sent.
    assertCode(Status.Code.INVALID_ARGUMENT, () -> client.interact(Turn.of(id("s"), "hi", Map.of("f", new Object()))));
    // Errors inside a stream carry their code too.
    assertCode(Status.Code.INVALID_ARGUMENT, () -> client.streamResponse(Turn.of(id("s"), "")).reply());
  }

  @Test
  void callTimeoutBecomesDeadlineExceeded() {
    try (ContextdClient impatient = ContextdClient.builder(server.address()).callTimeout(Duration.ofMillis(50)).build()) {
      assertCode(Status.Code.DEADLINE_EXCEEDED, () -> impatient.interact(Turn.of(id("s"), "/delay 2000 slow")));
    }
  }

  @Test
  void unreachableServerIsUnavailable() {
    try (ContextdClient nowhere = ContextdClient.builder("127.0.0.1:1").build()) {
      assertCode(Status.Code.UNAVAILABLE, () -> nowhere.getSession("x"));
    }
  }
}
