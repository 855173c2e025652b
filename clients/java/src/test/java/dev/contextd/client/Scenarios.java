package dev.contextd.client;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import com.google.protobuf.util.JsonFormat;
import contextd.v1.AdminServiceGrpc;
import contextd.v1.InteractServiceGrpc;
import contextd.v1.SessionServiceGrpc;
import contextd.v1.ToolServiceGrpc;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.MethodDescriptor;
import io.grpc.ServiceDescriptor;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.StreamObserver;
import java.io.IOException;
import java.io.Reader;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * Runs contextd's shared, language-neutral scenario files ({@code clients/scenarios/*.json})
 * through generic gRPC calls: each step names a full method, gives its request as proto3 JSON,
 * and states the expected status, response, stream events and variables to save. The format
 * is described in {@code clients/scenarios/README.md}.
 */
final class Scenarios {
  /** Bounds one step so a server that never answers fails the test instead of hanging it. */
  private static final long STEP_TIMEOUT_SECONDS = 60;

  private static final Pattern VARIABLE = Pattern.compile("\\$\\{([^}]*)\\}");
  private static final JsonFormat.Printer PRINTER = JsonFormat.printer().alwaysPrintFieldsWithNoPresence();
  private static final JsonFormat.Parser PARSER = JsonFormat.parser();
  private static final Map<String, MethodDescriptor<?, ?>> METHODS = new HashMap<>();

  static {
    for (ServiceDescriptor sd : List.of(
        SessionServiceGrpc.getServiceDescriptor(), InteractServiceGrpc.getServiceDescriptor(), ToolServiceGrpc.getServiceDescriptor(),
        AdminServiceGrpc.getServiceDescriptor())) {
      for (MethodDescriptor<?, ?> md : sd.getMethods()) {
        METHODS.put(md.getFullMethodName(), md);
      }
    }
  }

  /** One scenario file. */
  record Scenario(String name, String description, JsonArray steps, Path path) {}

  private Scenarios() {}

  /** Every *.json file of dir, sorted by file name. */
  static List<Scenario> load(Path dir) throws IOException {
    List<Scenario> out = new ArrayList<>();
    try (Stream<Path> files = Files.list(dir)) {
      for (Path p : files.filter(f -> f.getFileName().toString().endsWith(".json")).sorted().toList()) {
        JsonObject o;
        try (Reader r = Files.newBufferedReader(p, StandardCharsets.UTF_8)) {
          o = JsonParser.parseReader(r).getAsJsonObject();
        }
        if (!o.has("name") || !o.has("steps") || o.getAsJsonArray("steps").isEmpty()) {
          throw new IllegalArgumentException(p + ": a scenario needs a name and at least one step");
        }
        String description = o.has("description") ? o.get("description").getAsString() : "";
        out.add(new Scenario(o.get("name").getAsString(), description, o.getAsJsonArray("steps"), p));
      }
    }
    return out;
  }

  /** Runs the scenario's steps in order; throws AssertionError at the first failure. */
  static void run(Channel channel, Scenario scenario) throws Exception {
    byte[] run = new byte[4];
    new SecureRandom().nextBytes(run);
    Map<String, String> vars = new HashMap<>();
    vars.put("run", HexFormat.of().formatHex(run));
    new Runner(channel, scenario, vars).run();
  }

  private static final class Runner {
    private final Channel channel;
    private final Scenario scenario;
    private final Map<String, String> vars;
    private int step;
    /** The Converse frame being run, for failure messages (null outside one). */
    private String frame;

    Runner(Channel channel, Scenario scenario, Map<String, String> vars) {
      this.channel = channel;
      this.scenario = scenario;
      this.vars = vars;
    }

    void run() throws Exception {
      for (step = 0; step < scenario.steps().size(); step++) {
        JsonObject raw = scenario.steps().get(step).getAsJsonObject();
        // Converse frames are substituted one by one as they run, so that a frame can use a
        // variable saved by an earlier frame of the same step.
        JsonObject rest = raw.deepCopy();
        JsonElement frames = rest.remove("frames");
        JsonObject s = substitute(rest).getAsJsonObject();
        String rpc = s.has("rpc") ? s.get("rpc").getAsString() : "";
        MethodDescriptor<?, ?> md = METHODS.get(rpc);
        if (md == null) {
          throw fail("unknown rpc \"" + rpc + "\" (known: " + new TreeSet<>(METHODS.keySet()) + ")");
        }
        switch (md.getType()) {
          case UNARY -> unary(md, s);
          case SERVER_STREAMING -> serverStream(md, s);
          case BIDI_STREAMING -> bidi(md, frames == null ? new JsonArray() : frames.getAsJsonArray());
          default -> throw fail("client-streaming methods are not part of the scenario format (" + rpc + ")");
        }
      }
    }

    private CallOptions options() {
      return CallOptions.DEFAULT.withDeadlineAfter(STEP_TIMEOUT_SECONDS, TimeUnit.SECONDS);
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private void unary(MethodDescriptor md, JsonObject s) throws Exception {
      Message req = request(md, s.get("request"));
      JsonObject expect = object(s.get("expect"));
      Message resp = null;
      Status status = Status.OK;
      try {
        resp = (Message) ClientCalls.blockingUnaryCall(channel, md, options(), req);
      } catch (StatusRuntimeException e) {
        status = e.getStatus();
      }
      checkStatus(expect, status);
      if (resp == null) {
        return;
      }
      JsonElement actual = render(resp);
      if (expect.has("response")) {
        String diff = match(expect.get("response"), actual, "");
        if (diff != null) {
          throw mismatch("response", expect.get("response"), actual, diff);
        }
      }
      save(s.get("save"), actual);
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private void serverStream(MethodDescriptor md, JsonObject s) throws Exception {
      Message req = request(md, s.get("request"));
      JsonObject expect = object(s.get("expect"));
      List<JsonElement> events = new ArrayList<>();
      Status status = Status.OK;
      try {
        Iterator<Message> it = ClientCalls.blockingServerStreamingCall(channel, md, options(), req);
        while (it.hasNext()) {
          events.add(render(it.next()));
        }
      } catch (StatusRuntimeException e) {
        status = e.getStatus();
      }
      checkStatus(expect, status);
      checkEvents(expect, events);
      if (s.has("save")) {
        if (events.isEmpty()) {
          throw fail("save: the stream sent no event");
        }
        save(s.get("save"), events.get(events.size() - 1));
      }
    }

    /** What the bidi observer hands over: a message, or the end of the stream. */
    private record Item(Message message, Status end) {}

    @SuppressWarnings({"unchecked", "rawtypes"})
    private void bidi(MethodDescriptor md, JsonArray frames) throws Exception {
      if (frames.isEmpty()) {
        throw fail("a " + md.getFullMethodName() + " step needs frames");
      }
      BlockingQueue<Item> inbox = new LinkedBlockingQueue<>();
      ClientCall call = channel.newCall(md, options());
      StreamObserver<Message> requests = ClientCalls.asyncBidiStreamingCall(call, new StreamObserver<Message>() {
        @Override
        public void onNext(Message value) {
          inbox.add(new Item(value, null));
        }

        @Override
        public void onError(Throwable t) {
          inbox.add(new Item(null, Status.fromThrowable(t)));
        }

        @Override
        public void onCompleted() {
          inbox.add(new Item(null, Status.OK));
        }
      });
      Status[] ended = {null};
      try {
        for (int j = 0; j < frames.size(); j++) {
          this.frame = "frame " + j;
          JsonObject frame = substitute(frames.get(j)).getAsJsonObject();
          if (frame.has("send")) {
            requests.onNext(request(md, frame.get("send")));
          } else if (frame.has("until")) {
            String until = normalizeEvent(frame.get("until").getAsString());
            List<JsonElement> events = new ArrayList<>();
            while (true) {
              Item item = next(inbox, ended);
              if (item.end() != null) {
                throw fail("the stream ended (" + describe(item.end()) + ") before a \"" + until + "\" event; events read: "
                    + eventNames(events));
              }
              JsonElement e = render(item.message());
              events.add(e);
              if (eventName(e).equals(until)) {
                break;
              }
            }
            checkEvents(frame, events);
            save(frame.get("save"), events.get(events.size() - 1));
          } else if (frame.has("close")) {
            requests.onCompleted();
            List<JsonElement> rest = new ArrayList<>();
            Item item;
            while ((item = next(inbox, ended)).end() == null) {
              rest.add(render(item.message()));
            }
            if (!rest.isEmpty()) {
              throw fail("expected no more events after close, got " + rest);
            }
            checkStatus(frame, item.end());
          } else {
            throw fail("a frame needs send, until or close: " + frame);
          }
        }
      } finally {
        this.frame = null;
        if (ended[0] == null) {
          call.cancel("scenario step over", null);
        }
      }
    }

    private Item next(BlockingQueue<Item> inbox, Status[] ended) throws InterruptedException {
      if (ended[0] != null) {
        return new Item(null, ended[0]);
      }
      Item item = inbox.poll(STEP_TIMEOUT_SECONDS, TimeUnit.SECONDS);
      if (item == null) {
        throw fail("no frame from the server within " + STEP_TIMEOUT_SECONDS + "s");
      }
      if (item.end() != null) {
        ended[0] = item.end();
      }
      return item;
    }

    private Message request(MethodDescriptor<?, ?> md, JsonElement body) throws InvalidProtocolBufferException {
      Message proto = (Message) ((MethodDescriptor.PrototypeMarshaller<?>) md.getRequestMarshaller()).getMessagePrototype();
      Message.Builder b = proto.newBuilderForType();
      if (body != null && !body.isJsonNull()) {
        try {
          PARSER.merge(body.toString(), b);
        } catch (InvalidProtocolBufferException e) {
          throw fail(body + " is not a valid " + proto.getDescriptorForType().getFullName() + ": " + e.getMessage());
        }
      }
      return b.build();
    }

    private void checkStatus(JsonObject expect, Status status) {
      String want = expect.has("code") ? expect.get("code").getAsString() : "OK";
      String got = status.getCode().name();
      String message = status.getDescription() == null ? "" : status.getDescription();
      if (!want.equals(got)) {
        throw fail("status does not match\n  expected: " + want + "\n  actual:   " + got + " \"" + message + "\"");
      }
      if (expect.has("messageContains") && !message.contains(expect.get("messageContains").getAsString())) {
        throw fail("status message does not contain \"" + expect.get("messageContains").getAsString() + "\"\n  actual: " + got + " \""
            + message + "\"");
      }
    }

    private void checkEvents(JsonObject expect, List<JsonElement> events) {
      if (expect.has("events")) {
        JsonArray want = new JsonArray();
        for (JsonElement e : expect.getAsJsonArray("events")) {
          want.add(normalizeEvent(e.getAsString()));
        }
        JsonArray got = eventNames(events);
        if (!want.equals(got)) {
          throw mismatch("events", expect.get("events"), got, "different sequence");
        }
      }
      if (expect.has("text")) {
        StringBuilder text = new StringBuilder();
        for (JsonElement e : events) {
          JsonObject o = e.getAsJsonObject();
          if (o.has("delta")) {
            text.append(o.getAsJsonObject("delta").get("text").getAsString());
          }
        }
        if (!expect.get("text").getAsString().equals(text.toString())) {
          throw mismatch("text", expect.get("text"), new JsonPrimitive(text.toString()), "different text");
        }
      }
      if (expect.has("last")) {
        if (events.isEmpty()) {
          throw fail("last: no event was received");
        }
        JsonElement last = events.get(events.size() - 1);
        String diff = match(expect.get("last"), last, "");
        if (diff != null) {
          throw mismatch("last event", expect.get("last"), last, diff);
        }
      }
    }

    private void save(JsonElement spec, JsonElement actual) {
      if (spec == null || spec.isJsonNull()) {
        return;
      }
      for (Map.Entry<String, JsonElement> e : spec.getAsJsonObject().entrySet()) {
        String path = e.getValue().getAsString();
        JsonElement v = actual;
        for (String seg : path.split("\\.")) {
          if (v != null && v.isJsonObject()) {
            v = v.getAsJsonObject().get(seg);
          } else if (v != null && v.isJsonArray() && seg.matches("\\d+") && Integer.parseInt(seg) < v.getAsJsonArray().size()) {
            v = v.getAsJsonArray().get(Integer.parseInt(seg));
          } else {
            v = null;
          }
          if (v == null) {
            throw fail("save " + e.getKey() + ": no \"" + seg + "\" along " + path + " in " + actual);
          }
        }
        if (!v.isJsonPrimitive() || v.getAsJsonPrimitive().isBoolean()) {
          throw fail("save " + e.getKey() + ": " + path + " is " + v + ", not a string or number");
        }
        vars.put(e.getKey(), v.getAsString());
      }
    }

    private JsonElement substitute(JsonElement v) {
      if (v.isJsonPrimitive() && v.getAsJsonPrimitive().isString()) {
        Matcher m = VARIABLE.matcher(v.getAsString());
        StringBuilder out = new StringBuilder();
        while (m.find()) {
          String value = vars.get(m.group(1));
          if (value == null) {
            throw fail("unknown variable ${" + m.group(1) + "} (known: " + new TreeMap<>(vars).keySet() + ")");
          }
          m.appendReplacement(out, Matcher.quoteReplacement(value));
        }
        m.appendTail(out);
        return new JsonPrimitive(out.toString());
      }
      if (v.isJsonObject()) {
        JsonObject out = new JsonObject();
        for (Map.Entry<String, JsonElement> e : v.getAsJsonObject().entrySet()) {
          out.add(e.getKey(), substitute(e.getValue())); // keys stay as they are
        }
        return out;
      }
      if (v.isJsonArray()) {
        JsonArray out = new JsonArray();
        for (JsonElement e : v.getAsJsonArray()) {
          out.add(substitute(e));
        }
        return out;
      }
      return v;
    }

    private AssertionError fail(String what) {
      String where = "step " + step + (frame == null ? "" : ", " + frame);
      return new AssertionError("scenario " + scenario.name() + " (" + scenario.path().getFileName() + "), " + where + ": " + what);
    }

    private AssertionError mismatch(String what, JsonElement expected, JsonElement actual, String diff) {
      return fail(what + " does not match: " + diff + "\n  expected: " + expected + "\n  actual:   " + actual);
    }
  }

  /** The message as the format's canonical JSON (default values included). */
  static JsonElement render(Message m) throws InvalidProtocolBufferException {
    return JsonParser.parseString(PRINTER.print(m));
  }

  /** The oneof field set in a rendered stream message (its key besides turnId), snake_case. */
  static String eventName(JsonElement e) {
    for (String k : e.getAsJsonObject().keySet()) {
      if (!k.equals("turnId")) {
        return normalizeEvent(k);
      }
    }
    return "";
  }

  /** The events' names, runs of consecutive deltas collapsed into one. */
  static JsonArray eventNames(List<JsonElement> events) {
    JsonArray names = new JsonArray();
    for (JsonElement e : events) {
      String n = eventName(e);
      if (n.equals("delta") && !names.isEmpty() && names.get(names.size() - 1).getAsString().equals("delta")) {
        continue;
      }
      names.add(n);
    }
    return names;
  }

  /** Accepts an event name as the proto field name (tool_call) or its JSON name (toolCall). */
  static String normalizeEvent(String name) {
    return name.replaceAll("([A-Z])", "_$1").toLowerCase(java.util.Locale.ROOT);
  }

  /**
   * Checks expected ⊆ actual as the scenario format defines it; returns the first difference,
   * or null when they match.
   */
  static String match(JsonElement expected, JsonElement actual, String path) {
    String where = path.isEmpty() ? "at the top" : "at " + path.substring(1);
    if (expected.isJsonObject()) {
      JsonObject exp = expected.getAsJsonObject();
      if (exp.size() == 1 && exp.has("$exact")) {
        return deepEqual(exp.get("$exact"), actual) ? null : where + ": expected exactly " + exp.get("$exact") + ", got " + actual;
      }
      if (actual == null || !actual.isJsonObject()) {
        return where + ": expected an object, got " + actual;
      }
      for (String key : new TreeSet<>(exp.keySet())) {
        if (!actual.getAsJsonObject().has(key)) {
          return where + ": missing key \"" + key + "\"";
        }
        String diff = match(exp.get(key), actual.getAsJsonObject().get(key), path + "." + key);
        if (diff != null) {
          return diff;
        }
      }
      return null;
    }
    if (expected.isJsonArray()) {
      JsonArray exp = expected.getAsJsonArray();
      if (actual == null || !actual.isJsonArray() || actual.getAsJsonArray().size() != exp.size()) {
        return where + ": expected an array of " + exp.size() + ", got " + actual;
      }
      for (int i = 0; i < exp.size(); i++) {
        String diff = match(exp.get(i), actual.getAsJsonArray().get(i), path + "." + i);
        if (diff != null) {
          return diff;
        }
      }
      return null;
    }
    if (expected.isJsonNull()) {
      return actual == null || actual.isJsonNull() ? null : where + ": expected null, got " + actual;
    }
    JsonPrimitive exp = expected.getAsJsonPrimitive();
    if (exp.isNumber()) {
      return numbersEqual(exp, actual) ? null : where + ": expected " + exp + ", got " + actual;
    }
    if (exp.isString() && exp.getAsString().equals("$nonempty")) {
      return isEmpty(actual) ? where + ": expected a non-empty value, got " + actual : null;
    }
    return exp.equals(actual) ? null : where + ": expected " + exp + ", got " + actual;
  }

  private static boolean isEmpty(JsonElement v) {
    if (v == null || v.isJsonNull()) {
      return true;
    }
    if (v.isJsonPrimitive() && v.getAsJsonPrimitive().isString()) {
      return v.getAsString().isEmpty();
    }
    if (v.isJsonArray()) {
      return v.getAsJsonArray().isEmpty();
    }
    if (v.isJsonObject()) {
      return v.getAsJsonObject().size() == 0;
    }
    return false;
  }

  /** An expected number equals an actual number or numeric string (int64 is a string in JSON). */
  private static boolean numbersEqual(JsonPrimitive exp, JsonElement actual) {
    if (actual == null || !actual.isJsonPrimitive() || actual.getAsJsonPrimitive().isBoolean()) {
      return false;
    }
    try {
      return new BigDecimal(exp.getAsString()).compareTo(new BigDecimal(actual.getAsString())) == 0;
    } catch (NumberFormatException e) {
      return false;
    }
  }

  /** JSON equality; numbers compare by value, so 1 equals 1.0. */
  static boolean deepEqual(JsonElement a, JsonElement b) {
    if (a == null || b == null) {
      return a == b || (a != null ? a.isJsonNull() : b.isJsonNull());
    }
    if (a.isJsonObject()) {
      if (!b.isJsonObject() || a.getAsJsonObject().size() != b.getAsJsonObject().size()) {
        return false;
      }
      for (Map.Entry<String, JsonElement> e : a.getAsJsonObject().entrySet()) {
        if (!b.getAsJsonObject().has(e.getKey()) || !deepEqual(e.getValue(), b.getAsJsonObject().get(e.getKey()))) {
          return false;
        }
      }
      return true;
    }
    if (a.isJsonArray()) {
      if (!b.isJsonArray() || a.getAsJsonArray().size() != b.getAsJsonArray().size()) {
        return false;
      }
      for (int i = 0; i < a.getAsJsonArray().size(); i++) {
        if (!deepEqual(a.getAsJsonArray().get(i), b.getAsJsonArray().get(i))) {
          return false;
        }
      }
      return true;
    }
    if (a.isJsonPrimitive() && a.getAsJsonPrimitive().isNumber()) {
      return b.isJsonPrimitive() && b.getAsJsonPrimitive().isNumber()
          && new BigDecimal(a.getAsString()).compareTo(new BigDecimal(b.getAsString())) == 0;
    }
    return a.equals(b);
  }

  static String describe(Status s) {
    return s.getCode().name() + (s.getDescription() == null ? "" : " \"" + s.getDescription() + "\"");
  }

  private static JsonObject object(JsonElement e) {
    return e != null && e.isJsonObject() ? e.getAsJsonObject() : new JsonObject();
  }
}
