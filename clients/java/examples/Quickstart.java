// The same small program in every client: a session, a turn, a stream, a Converse turn with a
// client-side tool, and an error. Usage: java -cp <classpath> Quickstart.java [HOST:PORT]
import dev.contextd.client.*;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.util.Map;
import java.util.UUID;

public class Quickstart {
  public static void main(String[] args) {
    String target = args.length > 0 ? args[0] : "127.0.0.1:61900";
    try (ContextdClient client = ContextdClient.builder(target).build()) {
      String sid = "quickstart-" + UUID.randomUUID().toString().substring(0, 8);
      client.createSession(SessionOptions.id(sid).tools(Tool.of("get_weather", "Current weather of a city")));
      Reply reply = client.interact(Turn.of(sid, "Hello, I am John.", Map.of("user_id", "john")));
      System.out.println("interact: " + reply.text());
      StringBuilder text = new StringBuilder();
      try (EventStream events = client.streamResponse(Turn.of(sid, "Tell me more."))) {
        for (Event e : events) {
          if (e instanceof Event.Delta d) {
            text.append(d.text());
          }
        }
      }
      System.out.println("stream: " + text);
      try (Conversation conv = client.converse(SessionOptions.id(sid), call -> "sunny in " + call.arguments().get("city"))) {
        System.out.println("converse: " + conv.say("/call get_weather {\"city\": \"Paris\"}").text());
      }
      try {
        client.getSession("no-such-session");
      } catch (StatusRuntimeException e) {
        if (e.getStatus().getCode() != Status.Code.NOT_FOUND) {
          throw e;
        }
        System.out.println("error: NOT_FOUND");
      }
    }
  }
}
