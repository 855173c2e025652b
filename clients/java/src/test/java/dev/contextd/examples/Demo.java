package dev.contextd.examples;

import dev.contextd.client.ContextdClient;
import dev.contextd.client.Conversation;
import dev.contextd.client.Event;
import dev.contextd.client.Reply;
import dev.contextd.client.SessionOptions;
import dev.contextd.client.Tool;
import dev.contextd.client.ToolHandler;
import dev.contextd.client.Turn;
import java.io.PrintStream;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Replays the classic Model Context Protocol demo against a running contextd: two sessions
 * whose context grows turn by turn, then a tool round trip in which the model asks for a tool
 * that this program runs.
 *
 * <pre>mvn -q test-compile exec:java -Dexec.args=127.0.0.1:61900</pre>
 */
public final class Demo {
  private Demo() {}

  public static void main(String[] args) {
    run(args.length > 0 ? args[0] : "127.0.0.1:61900", System.out);
  }

  /** The whole demo, printing what happens to out. */
  public static void run(String target, PrintStream out) {
    try (ContextdClient client = ContextdClient.builder(target).build()) {
      List<Turn> turns = List.of(
          Turn.of("session_alpha", "Hello, I am John.", Map.of("user_id", "john_doe")),
          Turn.of("session_alpha", "Tell me about climate change.", Map.of("topic", "environment")),
          Turn.of("session_beta", "Hi, I am Jane.", Map.of("user_id", "jane_doe", "location", "NYC")),
          Turn.of("session_alpha", "What are some solutions?"));
      for (Turn turn : turns) {
        Reply reply = client.interact(turn);
        String s = "[" + turn.sessionId() + "] ";
        out.println(s + "user: " + turn.message());
        if (turn.context() != null) {
          out.println(s + "context patch: " + sorted(turn.context()));
        }
        out.println(s + "response: " + reply.text());
        out.println(s + "updated context: " + sorted(reply.context()));
        out.println();
      }

      // A tool round trip: the session declares get_weather, the model (echo answers `/call`
      // lines with tool calls) asks for it, and the handler below answers on this side.
      Tool weather = new Tool("get_weather", "Current weather for a city",
          Map.of("type", "object", "properties", Map.of("city", Map.of("type", "string")), "required", List.of("city")));
      ToolHandler handler = call -> {
        String result = "18°C and sunny in " + call.arguments().get("city");
        out.println("[session_tools] client runs " + call.name() + "(" + sorted(call.arguments()) + ") -> " + result);
        return result;
      };
      try (Conversation conv = client.converse(SessionOptions.id("session_tools").tools(weather), handler)) {
        String message = "/call get_weather {\"city\": \"Paris\"}";
        out.println("[session_tools] user: " + message);
        for (Event e : conv.send(message, null)) {
          if (e instanceof Event.ToolCallRequested r) {
            out.println("[session_tools] model asks for " + r.call().name() + " (call " + r.call().id() + ")");
          } else if (e instanceof Event.Completed c && !c.reply().needsToolResults()) {
            out.println("[session_tools] response: " + c.reply().text());
          }
        }
      }
    }
  }

  private static Map<String, ?> sorted(Map<String, ?> map) {
    return new TreeMap<>(map);
  }
}
