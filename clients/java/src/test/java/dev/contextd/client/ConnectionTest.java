package dev.contextd.client;

import static org.junit.jupiter.api.Assertions.assertEquals;

import contextd.v1.Common;
import contextd.v1.Interact.InteractResponse;
import contextd.v1.Interact.StreamResponseRequest;
import contextd.v1.Interact.StreamResponseResponse;
import contextd.v1.InteractServiceGrpc;
import contextd.v1.Session.GetSessionRequest;
import contextd.v1.Session.GetSessionResponse;
import contextd.v1.SessionServiceGrpc;
import io.grpc.Context;
import io.grpc.Contexts;
import io.grpc.Grpc;
import io.grpc.InsecureServerCredentials;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerCredentials;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.Status;
import io.grpc.TlsChannelCredentials;
import io.grpc.TlsServerCredentials;
import io.grpc.stub.StreamObserver;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.util.List;
import java.util.concurrent.TimeUnit;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.TrustManagerFactory;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * TLS and bearer tokens, against an in-process gRPC server that answers with the authorization
 * header it received, so the test sees exactly what the client sent.
 */
class ConnectionTest {
  private static final char[] PASSWORD = "changeit".toCharArray();
  private static final Metadata.Key<String> AUTHORIZATION = Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
  private static final Context.Key<String> SEEN = Context.key("authorization");

  @TempDir
  static Path dir;
  private static KeyStore keyStore;
  private Server server;

  /** A self-signed certificate for 127.0.0.1, made with the JDK's keytool. */
  @BeforeAll
  static void makeCertificate() throws Exception {
    Path store = dir.resolve("server.p12");
    Process keytool = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "keytool").toString(),
        "-genkeypair", "-alias", "server", "-keyalg", "EC", "-groupname", "secp256r1", "-dname", "CN=contextd test",
        "-ext", "SAN=ip:127.0.0.1", "-validity", "1", "-storetype", "PKCS12", "-keystore", store.toString(),
        "-storepass", new String(PASSWORD), "-keypass", new String(PASSWORD))
        .redirectErrorStream(true).start();
    String out = new String(keytool.getInputStream().readAllBytes());
    assertEquals(0, keytool.waitFor(), out);
    keyStore = KeyStore.getInstance("PKCS12");
    try (InputStream in = Files.newInputStream(store)) {
      keyStore.load(in, PASSWORD);
    }
  }

  @AfterEach
  void stop() throws InterruptedException {
    server.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
  }

  private int serve(ServerCredentials credentials) throws Exception {
    ServerInterceptor capture = new ServerInterceptor() {
      @Override
      public <Q, R> ServerCall.Listener<Q> interceptCall(ServerCall<Q, R> call, Metadata headers, ServerCallHandler<Q, R> next) {
        List<String> values = new java.util.ArrayList<>();
        headers.getAll(AUTHORIZATION).forEach(values::add);
        if (values.size() != 1) {
          call.close(Status.UNAUTHENTICATED.withDescription("expected one authorization header, got " + values), new Metadata());
          return new ServerCall.Listener<>() {};
        }
        return Contexts.interceptCall(Context.current().withValue(SEEN, values.get(0)), call, headers, next);
      }
    };
    SessionServiceGrpc.SessionServiceImplBase sessions = new SessionServiceGrpc.SessionServiceImplBase() {
      @Override
      public void getSession(GetSessionRequest request, StreamObserver<GetSessionResponse> out) {
        out.onNext(GetSessionResponse.newBuilder().setSession(Common.Session.newBuilder().setSessionId(SEEN.get())).build());
        out.onCompleted();
      }
    };
    InteractServiceGrpc.InteractServiceImplBase turns = new InteractServiceGrpc.InteractServiceImplBase() {
      @Override
      public void streamResponse(StreamResponseRequest request, StreamObserver<StreamResponseResponse> out) {
        out.onNext(StreamResponseResponse.newBuilder().setCompleted(InteractResponse.newBuilder().setResponse(SEEN.get())).build());
        out.onCompleted();
      }
    };
    server = Grpc.newServerBuilderForPort(0, credentials)
        .addService(ServerInterceptors.intercept(sessions, capture))
        .addService(ServerInterceptors.intercept(turns, capture))
        .build()
        .start();
    return server.getPort();
  }

  private static ServerCredentials serverTls() throws Exception {
    KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
    kmf.init(keyStore, PASSWORD);
    return TlsServerCredentials.newBuilder().keyManager(kmf.getKeyManagers()).build();
  }

  @Test
  void tlsWithBearerToken() throws Exception {
    int port = serve(serverTls());
    TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
    tmf.init(keyStore);
    try (ContextdClient client = ContextdClient.builder("127.0.0.1:" + port)
        .credentials(TlsChannelCredentials.newBuilder().trustManager(tmf.getTrustManagers()).build())
        .bearerToken("s3cret")
        .build()) {
      assertEquals("Bearer s3cret", client.getSession("x").id());
    }
  }

  @Test
  void tlsRefusesAnUntrustedServer() throws Exception {
    int port = serve(serverTls());
    try (ContextdClient client = ContextdClient.builder("127.0.0.1:" + port).tls().bearerToken("s3cret").build()) {
      ContextdClientTest.assertCode(Status.Code.UNAVAILABLE, () -> client.getSession("x"));
    }
  }

  @Test
  void bearerTokenOnPlaintextStreams() throws Exception {
    int port = serve(InsecureServerCredentials.create());
    try (ContextdClient client = ContextdClient.builder("127.0.0.1:" + port).bearerToken("t0ken").build()) {
      assertEquals("Bearer t0ken", client.streamResponse(Turn.of("s", "hi")).reply().text());
    }
  }
}
