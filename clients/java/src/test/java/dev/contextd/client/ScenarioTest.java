package dev.contextd.client;

import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/** Runs every shared scenario file as its own test, each against a contextd of its own. */
class ScenarioTest {
  /** clients/scenarios, or the folder named by CONTEXTD_SCENARIOS. */
  static Path scenarioDir() {
    String env = System.getenv("CONTEXTD_SCENARIOS");
    return env != null && !env.isEmpty() ? Path.of(env) : TestServer.repoRoot().resolve("clients/scenarios");
  }

  @TestFactory
  Stream<DynamicTest> scenarios() throws Exception {
    Path dir = scenarioDir();
    if (!Files.isDirectory(dir)) {
      throw new AssertionError("no scenario folder at " + dir);
    }
    List<Scenarios.Scenario> all = Scenarios.load(dir);
    if (all.isEmpty()) {
      throw new AssertionError("no scenario files in " + dir);
    }
    return all.stream().map(s -> DynamicTest.dynamicTest(s.name(), s.path().toUri(), () -> {
      try (TestServer server = TestServer.start()) {
        ManagedChannel channel = Grpc.newChannelBuilder(server.address(), InsecureChannelCredentials.create()).build();
        try {
          Scenarios.run(channel, s);
        } finally {
          channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
        }
      }
    }));
  }
}
