/** AdminService through the wrapper, and the API key against a `--auth keys` server. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { Code, ConnectError, ContextdClient } from "../src/index.js";
import { addKey, Server } from "./server.js";

function code(error: unknown): Code | undefined {
  return error instanceof ConnectError ? error.code : undefined;
}

describe("admin calls with authentication off", () => {
  // A server of its own: the shared one's tenant list is the admin scenario's to check.
  let server: Server;
  let client: ContextdClient;
  before(async () => {
    server = await Server.start();
    client = new ContextdClient(server.address);
  });
  after(async () => {
    client.close();
    await server.stop();
  });

  test("keys and tenants round trip", async () => {
    const created = await client.createKey("ts-admin-t", { role: "admin", label: "ts", ttlMs: 3_600_000 });
    assert.match(created.secret, /^ctxd_/);
    assert.equal(created.key?.role, "KEY_ROLE_ADMIN");
    assert.ok(created.key?.expireTime);
    assert.deepEqual((await client.listKeys("ts-admin-t")).map((k) => k.keyId), [created.key!.keyId]);
    assert.ok((await client.listTenants()).some((t) => t.tenantId === "ts-admin-t" && t.keys === 1));
    await client.createSession("ts-export");
    await client.interact("ts-export", "hello");
    const kinds: (string | undefined)[] = [];
    for await (const record of client.exportTenant("default")) {
      if (record.sessionId === "ts-export") kinds.push(record.record.case);
    }
    assert.deepEqual(kinds, ["session", "message", "message"]);
    assert.ok((await client.revokeKey(created.key!.keyId)).revokeTime);
    assert.equal((await client.deleteTenant("ts-admin-t")).deletedKeys, 1);
    await client.deleteSession("ts-export");
  });
});

describe("a --auth keys server", () => {
  let server: Server;
  let directory: string;
  let admin: string;
  let user: string;
  before(async () => {
    directory = mkdtempSync(join(tmpdir(), "contextd-ts-auth-"));
    const config = join(directory, "contextd.toml");
    writeFileSync(config, `[auth]\nkeys_file = ${JSON.stringify(join(directory, "keys.toml"))}\n`);
    admin = addKey(config, "acme", "admin");
    user = addKey(config, "acme", "user");
    server = await Server.start("--auth", "keys", "--config", config);
  });
  after(async () => {
    await server.stop();
    rmSync(directory, { recursive: true, force: true });
  });

  test("a call without the key is UNAUTHENTICATED, with it works, a user key is no admin", async () => {
    const anonymous = new ContextdClient(server.address);
    try {
      await assert.rejects(anonymous.listSessions(), (e) => code(e) === Code.Unauthenticated);
    } finally {
      anonymous.close();
    }
    const client = new ContextdClient(server.address, { token: user });
    try {
      assert.equal((await client.createSession("auth-ts")).sessionId, "auth-ts");
      assert.deepEqual((await client.listTenants()).map((t) => t.tenantId), ["acme"]);
      await assert.rejects(client.listKeys(), (e) => code(e) === Code.PermissionDenied);
    } finally {
      client.close();
    }
    const adminClient = new ContextdClient(server.address, { token: admin });
    try {
      assert.equal((await adminClient.listKeys("acme")).length, 2);
    } finally {
      adminClient.close();
    }
  });
});
