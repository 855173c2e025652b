package dev.contextd.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import contextd.v1.Admin.ExportTenantResponse;
import contextd.v1.Common.FinishReason;
import contextd.v1.Common.MessageRole;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Flow;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Predicate;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.Timeout;

/** The async API ({@link ContextdClient#async()}) against a real contextd. */
@Timeout(value = 5, unit = TimeUnit.MINUTES) // a hang fails the test instead of the whole build
class AsyncClientTest {
  private static final AtomicLong COUNTER = new AtomicLong();
  private static final Tool WEATHER = new Tool("get_weather", "Current weather of a city",
      Map.of("type", "object", "properties", Map.of("city", Map.of("type", "string"))));
  // Generous: the machine running the tests may be busy; nothing here waits this long when it works.
  private static final long WAIT_SECONDS = 60;

  private static TestServer server;
  private ContextdClient client;
  private AsyncContextdClient async;
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
    async = client.async();
    prefix = info.getTestMethod().orElseThrow().getName() + "-" + COUNTER.incrementAndGet() + "-" + System.nanoTime();
  }

  @AfterEach
  void disconnect() {
    client.close();
  }

  private String id(String name) {
    return prefix + "-" + name;
  }

  private static <T> T await(CompletableFuture<T> future) throws Exception {
    return future.get(WAIT_SECONDS, TimeUnit.SECONDS);
  }

  /** A turn slow enough (20 words, 1 s apart) that it is surely running when it is left. */
  private static String slowMessage() {
    StringBuilder slow = new StringBuilder("/delay 1000");
    for (int i = 0; i < 20; i++) {
      slow.append(" w").append(i);
    }
    return slow.toString();
  }

  /**
   * Collects what a publisher sends, asking for one item at a time (so the publisher's demand
   * handling is exercised), and cancels the subscription at the first item {@code stopAt} accepts.
   */
  private static final class Collector<T> implements Flow.Subscriber<T> {
    final CompletableFuture<List<T>> done = new CompletableFuture<>();
    private final List<T> items = new ArrayList<>();
    private final Predicate<T> stopAt;
    private Flow.Subscription subscription;

    Collector(Predicate<T> stopAt) {
      this.stopAt = stopAt;
    }

    static <T> List<T> all(Flow.Publisher<T> publisher) throws Exception {
      Collector<T> c = new Collector<>(item -> false);
      publisher.subscribe(c);
      return await(c.done);
    }

    static <T> List<T> until(Flow.Publisher<T> publisher, Predicate<T> stopAt) throws Exception {
      Collector<T> c = new Collector<>(stopAt);
      publisher.subscribe(c);
      return await(c.done);
    }

    @Override
    public void onSubscribe(Flow.Subscription s) {
      subscription = s;
      s.request(1);
    }

    @Override
    public void onNext(T item) {
      items.add(item);
      if (stopAt.test(item)) {
        subscription.cancel();
        done.complete(items);
      } else {
        subscription.request(1);
      }
    }

    @Override
    public void onError(Throwable t) {
      done.completeExceptionally(t);
    }

    @Override
    public void onComplete() {
      done.complete(items);
    }
  }

  private static Status.Code code(ExecutionException e) {
    return assertInstanceOf(StatusRuntimeException.class, e.getCause()).getStatus().getCode();
  }

  @Test
  void unaryCallsCompleteFutures() throws Exception {
    String sid = id("s");
    Session created = await(async.createSession(SessionOptions.id(sid).tools(WEATHER).context(Map.of("user_id", "ann"))));
    assertEquals(sid, created.id());
    Reply reply = await(async.interact(Turn.of(sid, "hello", Map.of("topic", "x"))));
    assertEquals("You said 'hello'. User ann is active. Current topic: x.", reply.text());
    assertEquals(2, await(async.getSession(sid)).messageCount());
    assertEquals(List.of("hello", reply.text()),
        await(async.listMessages(sid, 0, "")).messages().stream().map(Message::content).toList());
    ToolOutput set = await(async.callTool("context_set", Map.of("patch", Map.of("b", "two")), sid));
    assertEquals("two", ((Map<?, ?>) set.structured()).get("b"));
    assertEquals(List.of("get_weather"), await(async.listTools(sid)).session().stream().map(Tool::name).toList());
    assertEquals(List.of("history_search"),
        await(async.updateSession(sid, SessionUpdate.create().serverTools(List.of("history_search")))).serverTools());
    assertNull(await(async.updateSession(sid, SessionUpdate.create().resetServerTools())).serverTools());
    assertTrue(await(async.previewContext(sid, "next", null)).getEntriesCount() > 0);
    assertFalse(await(async.listModels()).getModelsList().isEmpty());
    assertEquals(2L, await(async.deleteSession(sid)));
    ExecutionException missing = assertThrows(ExecutionException.class, () -> await(async.getSession(sid)));
    assertEquals(Status.Code.NOT_FOUND, code(missing));
  }

  @Test
  void cancellingAFutureCancelsTheTurn() throws Exception {
    String sid = id("s");
    await(async.createSession(SessionOptions.id(sid)));
    CompletableFuture<Reply> slow = async.interact(Turn.of(sid, slowMessage()));
    assertTrue(slow.cancel(true));
    assertThrows(CancellationException.class, slow::join);
    // Turns on a session run one at a time: this one runs once the cancelled one is gone; had
    // the cancel not reached the server, the slow turn would be stored first.
    assertEquals("You said 'next'.", await(async.interact(Turn.of(sid, "next"))).text());
    assertEquals(List.of("next", "You said 'next'."), client.listMessages(sid).stream().map(Message::content).toList());
  }

  @Test
  void streamResponseIsAPublisher() throws Exception {
    String sid = id("s");
    Flow.Publisher<Event> turn = async.streamResponse(Turn.of(sid, "one two three", Map.of("topic", "x")));
    List<Event> events = Collector.all(turn);
    Event.Started started = assertInstanceOf(Event.Started.class, events.get(0));
    assertEquals(sid, started.sessionId());
    Event.Completed done = assertInstanceOf(Event.Completed.class, events.get(events.size() - 1));
    StringBuilder text = new StringBuilder();
    events.stream().filter(Event.Delta.class::isInstance).forEach(e -> text.append(((Event.Delta) e).text()));
    assertEquals("You said 'one two three'. Current topic: x.", done.reply().text());
    assertEquals(done.reply().text(), text.toString());
    // One subscription per turn: subscribing again would run it twice.
    ExecutionException again = assertThrows(ExecutionException.class, () -> Collector.all(turn));
    assertInstanceOf(IllegalStateException.class, again.getCause());
    // Errors arrive as onError with the status the blocking API throws.
    ExecutionException refused = assertThrows(ExecutionException.class, () -> Collector.all(async.streamResponse(Turn.of(sid, ""))));
    assertEquals(Status.Code.INVALID_ARGUMENT, code(refused));
  }

  @Test
  void cancellingTheSubscriptionCancelsTheTurn() throws Exception {
    String sid = id("s");
    await(async.interact(Turn.of(sid, "first")));
    List<Event> seen = Collector.until(async.streamResponse(Turn.of(sid, slowMessage())), Event.Delta.class::isInstance);
    assertInstanceOf(Event.Delta.class, seen.get(seen.size() - 1));
    assertEquals("You said 'third'.", await(async.interact(Turn.of(sid, "third"))).text());
    List<String> users = client.listMessages(sid).stream().filter(m -> m.role() == MessageRole.MESSAGE_ROLE_USER)
        .map(Message::content).toList();
    assertEquals(List.of("first", "third"), users);
  }

  @Test
  void exportTenantIsAPublisher() throws Exception {
    String sid = id("export");
    await(async.interact(Turn.of(sid, "hello")));
    List<String> kinds = Collector.all(async.exportTenant("default")).stream()
        .filter(r -> r.getSessionId().equals(sid))
        .map(r -> r.hasSession() ? "session" : "message")
        .toList();
    assertEquals(List.of("session", "message", "message"), kinds);
    // Left after the first record: the export is cancelled, the client is still usable.
    List<ExportTenantResponse> first = Collector.until(async.exportTenant("default"), r -> true);
    assertEquals(1, first.size());
    assertEquals(sid, await(async.getSession(sid)).id());
  }

  @Test
  void asyncConverseWithAToolHandler() throws Exception {
    String sid = id("c");
    ToolHandler handler = call -> "sunny in " + call.arguments().get("city");
    try (AsyncConversation conv = await(async.converse(SessionOptions.id(sid).tools(WEATHER), handler))) {
      assertTrue(conv.created());
      assertEquals("Tool get_weather returned: sunny in Paris", await(conv.say("/call get_weather {\"city\": \"Paris\"}")).text());
      List<Event> events = Collector.all(conv.send("/call get_weather {\"city\": \"Rome\"}", Map.of("topic", "travel")));
      assertTrue(events.stream().anyMatch(Event.ToolCallRequested.class::isInstance));
      Event.Completed last = assertInstanceOf(Event.Completed.class, events.get(events.size() - 1));
      assertEquals("Tool get_weather returned: sunny in Rome", last.reply().text());
      assertEquals("travel", last.reply().context().get("topic"));
    }
  }

  @Test
  void leavingAnAsyncConverseTurnEarlyCancelsIt() throws Exception {
    String sid = id("c");
    try (AsyncConversation conv = await(async.converse(SessionOptions.id(sid), null))) {
      Collector.until(conv.send(slowMessage(), null), Event.Delta.class::isInstance);
      assertEquals("You said 'one'.", await(conv.say("one")).text());
      // A cancelled future cancels its turn (or, not sent yet, never sends it); the next reply
      // is its own.
      CompletableFuture<Reply> slow = conv.say(slowMessage());
      assertTrue(slow.cancel(true));
      assertEquals("You said 'two'.", await(conv.say("two")).text());
    }
    assertEquals(List.of("one", "You said 'one'.", "two", "You said 'two'."),
        client.listMessages(sid).stream().map(Message::content).toList());
  }

  @Test
  void asyncConverseWithoutHandlerPausesAndAbandons() throws Exception {
    String sid = id("c");
    try (AsyncConversation conv = await(async.converse(SessionOptions.id(sid).tools(WEATHER), null))) {
      Reply paused = await(conv.say("/call get_weather {\"city\": \"Oslo\"}"));
      assertTrue(paused.needsToolResults());
      ExecutionException refused = assertThrows(ExecutionException.class, () -> await(conv.say("hello?")));
      assertEquals(Status.Code.FAILED_PRECONDITION, assertInstanceOf(TurnErrorException.class, refused.getCause()).getStatus().getCode());
      String callId = paused.toolCalls().get(0).id();
      assertEquals("Tool get_weather returned: snow", await(conv.replyToolResults(List.of(ToolResult.ok(callId, "snow")))).text());
      assertTrue(await(conv.say("/call get_weather {\"city\": \"Lima\"}")).needsToolResults());
      assertEquals(FinishReason.FINISH_REASON_CANCELLED, await(conv.abandonToolCalls()).finishReason());
      assertEquals("You said 'next'.", await(conv.say("next")).text());
    }
  }
}
