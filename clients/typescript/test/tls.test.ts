/** The client's TLS options against a real contextd serving TLS and mTLS, with certificates
 * made at test time by the openssl command. */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { Code, ConnectError, connect } from "../src/index.js";
import { Server } from "./server.js";

function openssl(dir: string, ...args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

function makeCa(dir: string, name: string): void {
  openssl(dir, "req", "-x509", ...EC, "-days", "2", "-keyout", `${name}.key`, "-out", `${name}.pem`, "-subj", `/CN=contextd test ${name}`);
}

function issue(dir: string, name: string, subject: string, extensions: string): void {
  openssl(dir, "req", ...EC, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject);
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl(dir, "x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-out", `${name}.pem`, "-extfile", `${name}.ext`);
}

/** A refused handshake: connect-node reports TLS failures as INTERNAL (with the TLS error's
 * text), a closed connection as UNAVAILABLE. */
async function rejectsUnavailable(promise: Promise<unknown>): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ConnectError, String(error));
    assert.ok([Code.Unavailable, Code.Internal].includes(error.code), error.message);
    return true;
  });
}

describe("TLS options", () => {
  let dir: string;
  let tlsServer: Server;
  let mtlsServer: Server;
  const port = (server: Server) => `localhost:${server.address.split(":").pop()}`;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "contextd-ts-tls-"));
    makeCa(dir, "ca");
    makeCa(dir, "other");
    issue(dir, "server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    issue(dir, "client", "/CN=alice", "subjectAltName=URI:spiffe://contextd.test/alice\nextendedKeyUsage=clientAuth\n");
    const serving = ["--tls-cert", join(dir, "server.pem"), "--tls-key", join(dir, "server.key")];
    tlsServer = await Server.start(...serving);
    mtlsServer = await Server.start(...serving, "--tls-client-ca", join(dir, "ca.pem"));
  });

  after(async () => {
    await tlsServer.stop();
    await mtlsServer.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("TLS with the server's CA, as a file and as PEM", async () => {
    const fromFile = connect(port(tlsServer), { caFile: join(dir, "ca.pem"), timeoutMs: 30000 });
    try {
      const reply = await fromFile.interact("ts-tls", "hello");
      assert.ok(reply.response.length > 0);
    } finally {
      fromFile.close();
    }
    const fromPem = connect(port(tlsServer), { ca: readFileSync(join(dir, "ca.pem")), timeoutMs: 30000 });
    try {
      assert.ok((await fromPem.listModels()).models.length > 0);
    } finally {
      fromPem.close();
    }
  });

  test("a client without the CA, and plaintext, are refused", async () => {
    const stranger = connect(port(tlsServer), { caFile: join(dir, "other.pem"), timeoutMs: 10000 });
    try {
      await rejectsUnavailable(stranger.listModels());
    } finally {
      stranger.close();
    }
    const plain = connect(port(tlsServer), { timeoutMs: 10000 });
    try {
      await assert.rejects(plain.listModels());
    } finally {
      plain.close();
    }
  });

  test("mTLS with a client certificate, refused without one", async () => {
    const alice = connect(port(mtlsServer), {
      caFile: join(dir, "ca.pem"),
      certFile: join(dir, "client.pem"),
      keyFile: join(dir, "client.key"),
      timeoutMs: 30000,
    });
    try {
      const reply = await alice.interact("ts-mtls", "hello");
      assert.ok(reply.response.length > 0);
    } finally {
      alice.close();
    }
    const anonymous = connect(port(mtlsServer), { caFile: join(dir, "ca.pem"), timeoutMs: 10000 });
    try {
      await rejectsUnavailable(anonymous.listModels());
    } finally {
      anonymous.close();
    }
  });

  test("half an identity is refused before connecting", () => {
    assert.throws(() => connect("localhost:1", { certFile: join(dir, "client.pem") }), /go together/);
  });
});
