package dev.contextd.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.grpc.Status;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The builder's TLS options against a real contextd serving TLS and mTLS, with certificates
 * made at test time by the openssl command.
 */
class TlsTest {
  @TempDir static Path dir;
  private static TestServer tlsServer;
  private static TestServer mtlsServer;

  private static void openssl(String... args) throws IOException, InterruptedException {
    List<String> cmd = new ArrayList<>(List.of("openssl"));
    cmd.addAll(List.of(args));
    Process p = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    assertEquals(0, p.waitFor(), out);
  }

  private static final String[] EC = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"};

  private static void ca(String name) throws IOException, InterruptedException {
    List<String> args = new ArrayList<>(List.of("req", "-x509"));
    args.addAll(List.of(EC));
    args.addAll(List.of("-days", "2", "-keyout", name + ".key", "-out", name + ".pem", "-subj", "/CN=contextd test " + name));
    openssl(args.toArray(String[]::new));
  }

  private static void issue(String name, String subject, String extensions) throws IOException, InterruptedException {
    List<String> args = new ArrayList<>(List.of("req"));
    args.addAll(List.of(EC));
    args.addAll(List.of("-keyout", name + ".key", "-out", name + ".csr", "-subj", subject));
    openssl(args.toArray(String[]::new));
    Files.writeString(dir.resolve(name + ".ext"), extensions);
    openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-out", name + ".pem", "-extfile", name + ".ext");
  }

  @BeforeAll
  static void start() throws Exception {
    ca("ca");
    ca("other");
    issue("server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    issue("client", "/CN=alice", "subjectAltName=URI:spiffe://contextd.test/alice\nextendedKeyUsage=clientAuth\n");
    List<String> serving = List.of("--tls-cert", dir.resolve("server.pem").toString(), "--tls-key", dir.resolve("server.key").toString());
    tlsServer = TestServer.start(serving);
    List<String> mtls = new ArrayList<>(serving);
    mtls.addAll(List.of("--tls-client-ca", dir.resolve("ca.pem").toString()));
    mtlsServer = TestServer.start(mtls);
  }

  @AfterAll
  static void stop() throws InterruptedException {
    if (tlsServer != null) tlsServer.close();
    if (mtlsServer != null) mtlsServer.close();
  }

  private static String localhost(TestServer server) {
    String address = server.address();
    return "localhost:" + address.substring(address.lastIndexOf(':') + 1);
  }

  @Test
  void tlsWithTheServersCa() throws Exception {
    try (ContextdClient client = ContextdClient.builder(localhost(tlsServer)).tlsCa(dir.resolve("ca.pem")).build()) {
      assertFalse(client.interact(Turn.of("java-tls", "hello")).text().isEmpty());
    }
    byte[] ca = Files.readAllBytes(dir.resolve("ca.pem"));
    try (ContextdClient client = ContextdClient.builder(localhost(tlsServer)).tlsCa(ca).build()) {
      assertFalse(client.listModels().getModelsList().isEmpty());
    }
  }

  @Test
  void aClientWithoutTheCaAndPlaintextAreRefused() throws Exception {
    try (ContextdClient client = ContextdClient.builder(localhost(tlsServer)).tlsCa(dir.resolve("other.pem")).build()) {
      ContextdClientTest.assertCode(Status.Code.UNAVAILABLE, client::listModels);
    }
    try (ContextdClient client = ContextdClient.builder(localhost(tlsServer)).build()) {
      ContextdClientTest.assertCode(Status.Code.UNAVAILABLE, client::listModels);
    }
  }

  @Test
  void mutualTls() throws Exception {
    try (ContextdClient client = ContextdClient.builder(localhost(mtlsServer))
        .tlsCa(dir.resolve("ca.pem"))
        .clientCertificate(dir.resolve("client.pem"), dir.resolve("client.key"))
        .build()) {
      assertFalse(client.interact(Turn.of("java-mtls", "hello")).text().isEmpty());
    }
    try (ContextdClient client = ContextdClient.builder(localhost(mtlsServer)).tlsCa(dir.resolve("ca.pem")).build()) {
      ContextdClientTest.assertCode(Status.Code.UNAVAILABLE, client::listModels);
    }
  }

  @Test
  void aMissingFileIsNamed() {
    Exception e = assertThrows(java.io.UncheckedIOException.class,
        () -> ContextdClient.builder("localhost:1").tlsCa(dir.resolve("missing.pem")));
    assertFalse(e.getMessage().isEmpty());
  }
}
