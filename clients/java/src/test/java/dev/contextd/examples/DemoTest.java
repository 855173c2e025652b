package dev.contextd.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.contextd.client.TestServer;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Runs the demo against a fresh contextd and checks every line it prints. */
class DemoTest {
  @Test
  void demoPrintsTheConversation() throws Exception {
    ByteArrayOutputStream buffer = new ByteArrayOutputStream();
    try (TestServer server = TestServer.start(); PrintStream out = new PrintStream(buffer, true, StandardCharsets.UTF_8)) {
      Demo.run(server.address(), out);
    }
    List<String> lines = List.of(buffer.toString(StandardCharsets.UTF_8).strip().split("\n", -1));
    List<String> want = List.of(
        "[session_alpha] user: Hello, I am John.",
        "[session_alpha] context patch: {user_id=john_doe}",
        "[session_alpha] response: You said 'Hello, I am John.'. User john_doe is active.",
        "[session_alpha] updated context: {user_id=john_doe}",
        "",
        "[session_alpha] user: Tell me about climate change.",
        "[session_alpha] context patch: {topic=environment}",
        "[session_alpha] response: You said 'Tell me about climate change.'. User john_doe is active. Current topic: environment.",
        "[session_alpha] updated context: {topic=environment, user_id=john_doe}",
        "",
        "[session_beta] user: Hi, I am Jane.",
        "[session_beta] context patch: {location=NYC, user_id=jane_doe}",
        "[session_beta] response: You said 'Hi, I am Jane.'. User jane_doe is active. Context: location=NYC.",
        "[session_beta] updated context: {location=NYC, user_id=jane_doe}",
        "",
        "[session_alpha] user: What are some solutions?",
        "[session_alpha] response: You said 'What are some solutions?'. User john_doe is active. Current topic: environment.",
        "[session_alpha] updated context: {topic=environment, user_id=john_doe}",
        "",
        "[session_tools] user: /call get_weather {\"city\": \"Paris\"}");
    assertEquals(want.size() + 3, lines.size(), () -> String.join("\n", lines));
    assertEquals(want, lines.subList(0, want.size()));
    List<String> rest = lines.subList(want.size(), lines.size());
    assertTrue(rest.get(0).startsWith("[session_tools] model asks for get_weather (call "), rest.get(0));
    assertEquals("[session_tools] client runs get_weather({city=Paris}) -> 18°C and sunny in Paris", rest.get(1));
    assertEquals("[session_tools] response: Tool get_weather returned: 18°C and sunny in Paris", rest.get(2));
  }
}
