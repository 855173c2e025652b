package dev.contextd.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import contextd.v1.Admin.CreateKeyResponse;
import contextd.v1.Admin.ExportTenantResponse;
import contextd.v1.Admin.KeyRole;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** AdminService through the wrapper, and the API key against a {@code --auth keys} server. */
class AdminTest {
  /** On a server of its own: the shared one's tenant list is the admin scenario's to check. */
  @Test
  void adminCallsWithoutAuth() throws Exception {
    try (TestServer server = TestServer.start();
        ContextdClient client = ContextdClient.builder(server.address()).build()) {
      CreateKeyResponse created = client.createKey("java-admin-t", KeyRole.KEY_ROLE_ADMIN, "java", Duration.ofHours(1));
      assertTrue(created.getSecret().startsWith("ctxd_"));
      assertTrue(created.getKey().hasExpireTime());
      assertEquals(KeyRole.KEY_ROLE_ADMIN, created.getKey().getRole());
      String id = created.getKey().getKeyId();
      assertEquals(List.of(id), client.listKeys("java-admin-t").stream().map(k -> k.getKeyId()).toList());
      assertTrue(client.listTenants().stream().anyMatch(t -> t.getTenantId().equals("java-admin-t") && t.getKeys() == 1));
      client.createSession(SessionOptions.id("java-export"));
      client.interact(Turn.of("java-export", "hello"));
      List<String> kinds;
      try (Stream<ExportTenantResponse> records = client.exportTenant("default")) {
        kinds = records.filter(r -> r.getSessionId().equals("java-export"))
            .map(r -> r.hasSession() ? "session" : "message")
            .toList();
      }
      assertEquals(List.of("session", "message", "message"), kinds);
      assertTrue(client.revokeKey(id).hasRevokeTime());
      assertEquals(1, client.deleteTenant("java-admin-t").getDeletedKeys());
      client.deleteSession("java-export");
    }
  }

  /** Without a key: UNAUTHENTICATED; with one: served; a user key's admin call: PERMISSION_DENIED. */
  @Test
  void authKeys(@TempDir Path dir) throws Exception {
    Path config = dir.resolve("contextd.toml");
    Files.writeString(config, "[auth]\nkeys_file = \"" + dir.resolve("keys.toml").toString().replace("\\", "\\\\") + "\"\n");
    String admin = TestServer.addKey(config, "acme", "admin");
    String user = TestServer.addKey(config, "acme", "user");
    try (TestServer server = TestServer.start(List.of("--auth", "keys", "--config", config.toString()))) {
      try (ContextdClient anonymous = ContextdClient.builder(server.address()).build()) {
        StatusRuntimeException e = assertThrows(StatusRuntimeException.class, () -> anonymous.listSessions(0, ""));
        assertEquals(Status.Code.UNAUTHENTICATED, e.getStatus().getCode());
      }
      try (ContextdClient client = ContextdClient.builder(server.address()).bearerToken(user).build()) {
        assertEquals("auth-java", client.createSession(SessionOptions.id("auth-java")).id());
        assertEquals(List.of("acme"), client.listTenants().stream().map(t -> t.getTenantId()).toList());
        StatusRuntimeException e = assertThrows(StatusRuntimeException.class, () -> client.listKeys(""));
        assertEquals(Status.Code.PERMISSION_DENIED, e.getStatus().getCode());
      }
      try (ContextdClient client = ContextdClient.builder(server.address()).bearerToken(admin).build()) {
        assertEquals(2, client.listKeys("acme").size());
      }
    }
  }
}
